"""The `foundry` CLI: listing, config show/validate, errors with exit code 2, fast --help."""

from __future__ import annotations

import json
import subprocess
import sys

from foundry_core.cli.main import build_cli


def invoke(pm, args, runner):
    return runner.invoke(build_cli(lambda: pm), args)


def test_components_lists_core_builtins(foundry_pm, cli_runner):
    result = invoke(foundry_pm, ["components"], cli_runner)
    assert result.exit_code == 0
    assert "transformer" in result.output and "foundry-core" in result.output
    result = invoke(foundry_pm, ["components", "optimizer"], cli_runner)
    assert "adamw" in result.output and "transformer" not in result.output
    assert "-> foundry_core.train.optim:AdamW" in result.output  # each component's target


def test_plugins_json_names_the_distribution(foundry_pm, cli_runner):
    core = next(r for r in json.loads(invoke(foundry_pm, ["plugins", "--json"], cli_runner).output) if r["name"] == "foundry-core")
    assert core["distribution"] == "foundry-robotics-core"  # foundry-core on PyPI is another project


def test_plugins_json(foundry_pm, cli_runner):
    result = invoke(foundry_pm, ["plugins", "--json"], cli_runner)
    rows = json.loads(result.output)
    core = next(r for r in rows if r["name"] == "foundry-core")
    assert "model:transformer" in core["components"] and core["version"] == "0.1.0"


def test_config_show_resolves(foundry_pm, cli_runner, tmp_path):
    (tmp_path / "base.yaml").write_text("a: {b: 1, c: 2}\n")
    (tmp_path / "run.yaml").write_text("include: base.yaml\na: {c: 3}\n")
    result = invoke(foundry_pm, ["config", "show", str(tmp_path / "run.yaml"), "a.d=[1,2]"], cli_runner)
    assert result.exit_code == 0, result.output
    assert "b: 1" in result.output and "c: 3" in result.output and "d: [1, 2]" in result.output


def test_config_errors_exit_2_without_traceback(foundry_pm, cli_runner, tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    result = invoke(foundry_pm, ["config", "show", str(tmp_path / "bad.yaml")], cli_runner)
    assert result.exit_code == 2 and "malformed YAML" in result.output and "Traceback" not in result.output
    result = invoke(foundry_pm, ["config", "show", str(tmp_path / "missing.yaml")], cli_runner)
    assert result.exit_code == 2 and "not found" in result.output


def test_config_validate_run_schema_unknown_component(foundry_pm, cli_runner, tmp_path):
    (tmp_path / "run.yaml").write_text("model: {name: transformr}\n")
    result = invoke(foundry_pm, ["config", "validate", str(tmp_path / "run.yaml")], cli_runner)
    assert result.exit_code == 2
    assert "no model named 'transformr'; did you mean 'transformer'" in result.output
    (tmp_path / "run2.yaml").write_text("model: {name: transformer}\ntrian: {}\n")
    result = invoke(foundry_pm, ["config", "validate", str(tmp_path / "run2.yaml")], cli_runner)
    assert result.exit_code == 2 and "trian: unknown key; did you mean 'train'" in result.output


def test_debug_flag_shows_traceback(foundry_pm, cli_runner, tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    result = invoke(foundry_pm, ["--debug", "config", "show", str(tmp_path / "bad.yaml")], cli_runner)
    assert result.exit_code != 0 and result.exception is not None


def test_help_imports_no_torch():
    probe = (
        "import sys; from foundry_core.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('TORCH=%s' % ('torch' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "Commands:" in out.stdout
    assert "TORCH=False" in out.stderr, out.stderr


def test_command_of_a_missing_package_says_what_to_install(foundry_pm, cli_runner):
    from foundry_core.first_party import FIRST_PARTY_COMMANDS

    for path, plugin in FIRST_PARTY_COMMANDS.items():  # core only: none of them is installed
        result = invoke(foundry_pm, path.split(), cli_runner)
        assert result.exit_code == 2, (path, result.output)
        assert f"'foundry {path}' is provided by {plugin}" in result.output
        assert f"install {plugin.replace('foundry-', 'foundry-robotics-')}" in result.output
    result = invoke(foundry_pm, ["nosuch"], cli_runner)
    assert result.exit_code == 2 and "No such command 'nosuch'" in result.output
