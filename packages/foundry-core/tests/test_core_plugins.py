"""Plugin manager: safe entry-point loading, check_pending, env switches, hook tracing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pluggy
import pytest

from foundry_core import hookspecs, plugins
from foundry_core.hookspecs import hookimpl
from foundry_core.plugins import make_plugin_manager, plugin_infos


class FakeDist:
    version = "9.9.9"


def fake_entry_points(monkeypatch, tmp_path, modules: dict[str, str]):
    """Install modules on sys.path and make them the only `foundry.plugins` entry points."""
    eps = []
    for name, source in modules.items():
        mod = name.replace("-", "_")
        (tmp_path / f"{mod}.py").write_text(textwrap.dedent(source))
        ep = EntryPoint(name=name, value=mod, group=hookspecs.ENTRY_POINT_GROUP)
        eps.append(ep)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "entry_points", lambda group: eps if group == hookspecs.ENTRY_POINT_GROUP else [])
    monkeypatch.delenv("FOUNDRY_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("FOUNDRY_PLUGINS", raising=False)


GOOD = """
from foundry_core.hookspecs import hookimpl
@hookimpl
def register_tasks(register):
    register("toy_env", "x.y:Z")
"""


def test_broken_plugin_is_a_warning_and_the_rest_load(monkeypatch, tmp_path, caplog):
    fake_entry_points(monkeypatch, tmp_path, {"good-plugin": GOOD, "bad-plugin": "raise RuntimeError('boom at import')\n"})
    pm = make_plugin_manager()
    assert pm.get_plugin("good-plugin") is not None
    assert "bad-plugin" in pm.load_errors and "boom at import" in pm.load_errors["bad-plugin"]
    assert "could not load plugin bad-plugin" in caplog.text
    infos = {i.name: i for i in plugin_infos(pm)}
    assert infos["bad-plugin"].error and "register_tasks" in infos["good-plugin"].hooks


def test_strict_mode_raises(monkeypatch, tmp_path):
    fake_entry_points(monkeypatch, tmp_path, {"bad-plugin2": "raise RuntimeError('boom')\n"})
    with pytest.raises(RuntimeError, match="boom"):
        make_plugin_manager(strict=True)


def test_misspelled_hookimpl_is_reported(monkeypatch, tmp_path):
    fake_entry_points(
        monkeypatch,
        tmp_path,
        {"typo-plugin": "from foundry_core.hookspecs import hookimpl\n@hookimpl\ndef register_encoder(register):\n    pass\n"},
    )
    with pytest.raises(pluggy.PluginValidationError, match="register_encoder"):
        make_plugin_manager()


def test_disable_autoload_and_explicit_list(monkeypatch, tmp_path):
    fake_entry_points(monkeypatch, tmp_path, {"p-one": GOOD, "p-two": GOOD.replace("toy_env", "toy_env2")})
    monkeypatch.setenv("FOUNDRY_PLUGINS", "p-two")
    pm = make_plugin_manager()
    assert pm.get_plugin("p-one") is None and pm.get_plugin("p-two") is not None
    monkeypatch.setenv("FOUNDRY_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = make_plugin_manager()
    assert pm.get_plugin("p-two") is None and pm.get_plugin("foundry-core") is not None


def test_trace_hooks(monkeypatch, capsys, foundry_pm):
    monkeypatch.setenv("FOUNDRY_TRACE_HOOKS", "1")
    monkeypatch.setenv("FOUNDRY_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = make_plugin_manager()
    pm.hook.register_models(register=lambda *a, **k: None)
    assert "[foundry hook] register_models" in capsys.readouterr().err


def test_hook_register_commands(foundry_pm, cli_runner):
    import click

    from foundry_core.cli.main import build_cli

    class Hello:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hi")

    foundry_pm.register(Hello(), name="hello-plugin")
    result = cli_runner.invoke(build_cli(lambda: foundry_pm), ["hello"])
    assert result.exit_code == 0 and result.output == "hi\n"


def test_plugin_cannot_shadow_builtin_command(foundry_pm, cli_runner):
    import click

    from foundry_core.cli.main import build_cli

    class Shadow:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("train")
            def train():
                click.echo("hijacked")

    foundry_pm.register(Shadow(), name="shadow-plugin")
    result = cli_runner.invoke(build_cli(lambda: foundry_pm), ["train", "x.yaml"])
    assert result.exit_code == 2 and "replace the built-in command 'foundry train'" in result.output


def test_discovery_imports_no_torch():
    probe = (
        "import sys; from foundry_core.plugins import make_plugin_manager; from foundry_core.registry import collect; "
        "collect(make_plugin_manager()); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
