"""Plugin manager: safe entry-point loading, check_pending, env switches, hook tracing."""

from __future__ import annotations

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
        monkeypatch.delitem(sys.modules, mod, raising=False)  # another test's module of the same name
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


TYPO = "from foundry_core.hookspecs import hookimpl\n@hookimpl\ndef register_encoder(register):\n    pass\n"
RAISES = """
from foundry_core.hookspecs import hookimpl
@hookimpl
def register_models(register):
    register("half_registered", "x.y:Z")
    raise KeyError("boom in registration")
"""
RAISES_IN_COMMANDS = """
from foundry_core.hookspecs import hookimpl
@hookimpl
def register_commands(cli):
    raise RuntimeError("boom in register_commands")
"""


def test_misspelled_hookimpl_is_a_warning_naming_the_plugin(monkeypatch, tmp_path, caplog):
    fake_entry_points(monkeypatch, tmp_path, {"typo-plugin": TYPO, "good-plugin": GOOD})
    pm = make_plugin_manager()
    assert pm.get_plugin("typo-plugin") is None and pm.get_plugin("good-plugin") is not None
    assert "unknown hook 'register_encoder'; did you mean 'register_encoders'" in pm.load_errors["typo-plugin"]
    assert "could not load plugin typo-plugin" in caplog.text
    with pytest.raises(pluggy.PluginValidationError, match="register_encoder"):
        make_plugin_manager(strict=True)


def _cli_with(monkeypatch, tmp_path, modules):
    from foundry_core.cli.main import build_cli

    fake_entry_points(monkeypatch, tmp_path, modules)
    pm = make_plugin_manager()
    return build_cli(lambda: pm), pm


def _run_config(tmp_path):
    import yaml

    from foundry_core.testing import TOY_SOURCE, run_config

    cfg = run_config(tmp_path / "run", model={"name": "toy_regression", "width": 8},
                     source={**TOY_SOURCE, "num_samples": 16}, steps=1, batch=4)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("broken", [TYPO, RAISES, RAISES_IN_COMMANDS], ids=["typo", "raises", "raises-in-commands"])
def test_a_broken_plugin_never_takes_the_cli_down(monkeypatch, tmp_path, cli_runner, broken):
    cli, pm = _cli_with(monkeypatch, tmp_path, {"broken-plugin": broken, "good-plugin": GOOD})
    help_ = cli_runner.invoke(cli, ["--help"])
    assert help_.exit_code == 0 and "train" in help_.output, help_.output
    listing = cli_runner.invoke(cli, ["plugins"])
    assert listing.exit_code == 0, listing.output
    assert "broken-plugin" in listing.output and "FAILED" in listing.output
    assert "good-plugin" in listing.output
    config = _run_config(tmp_path)
    shown = cli_runner.invoke(cli, ["config", "show", str(config)])
    assert shown.exit_code == 0 and "toy_regression" in shown.output, shown.output
    trained = cli_runner.invoke(cli, ["train", str(config)])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()


def test_a_registration_hook_that_raises_registers_nothing_and_is_shown(monkeypatch, tmp_path, caplog):
    from foundry_core.registry import collect

    fake_entry_points(monkeypatch, tmp_path, {"broken-plugin": RAISES, "good-plugin": GOOD})
    pm = make_plugin_manager()
    registry = collect(pm)
    assert "half_registered" not in registry.names("model") and "toy_env" in registry.names("task")
    assert "register_models raised KeyError" in pm.load_errors["broken-plugin"]
    assert "a hook failed in plugin broken-plugin" in caplog.text
    infos = {i.name: i for i in plugin_infos(pm)}
    assert infos["broken-plugin"].error and infos["broken-plugin"].version == "unknown"
    assert not infos["good-plugin"].error


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


def test_plugin_cannot_shadow_builtin_command(foundry_pm, cli_runner, tmp_path):
    import click

    from foundry_core.cli.main import build_cli

    class Shadow:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("train")
            def train():
                click.echo("hijacked")

    foundry_pm.register(Shadow(), name="shadow-plugin")
    cli = build_cli(lambda: foundry_pm)
    result = cli_runner.invoke(cli, ["train", str(_run_config(tmp_path))])
    assert result.exit_code == 0 and "hijacked" not in result.output  # the built-in ran
    assert "replace the built-in command 'foundry train'" in foundry_pm.load_errors["shadow-plugin"]
    listing = cli_runner.invoke(cli, ["plugins"])
    assert "shadow-plugin  FAILED" in listing.output
