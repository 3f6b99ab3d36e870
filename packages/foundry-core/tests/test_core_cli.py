"""The `foundry` CLI: listing, config show/validate, errors with exit code 2, fast --help."""

from __future__ import annotations

import json

from foundry_core.cli.main import build_cli
from foundry_core.testing import modules_imported_by


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
    assert result.exit_code == 2 and "Traceback" in result.output and "malformed YAML" in result.output


RUN = """
run: {out_dir: OUT}
model: {name: toy_regression, width: 8}
data: {mix: [{source: {name: synthetic_regression, num_samples: 16}}]}
train: {budget: {steps: 1}, batch: {global: 4, per_device: 4}, progress: false}
"""


def test_config_validate_of_an_empty_file_is_an_error(foundry_pm, cli_runner, tmp_path):
    """Before: ``config validate`` of an empty file said ok."""
    (tmp_path / "empty.yaml").write_text("\n# nothing here\n")
    result = invoke(foundry_pm, ["config", "validate", str(tmp_path / "empty.yaml")], cli_runner)
    assert result.exit_code == 2 and "empty.yaml: the file is empty" in result.output


def test_duplicate_yaml_keys_are_an_error_naming_key_and_line(foundry_pm, cli_runner, tmp_path):
    """Before: the second ``lr`` silently replaced the first."""
    (tmp_path / "dup.yaml").write_text(RUN.replace("OUT", str(tmp_path / "o")) + "train: {}\n")
    result = invoke(foundry_pm, ["config", "validate", str(tmp_path / "dup.yaml")], cli_runner)
    assert result.exit_code == 2
    assert "dup.yaml:6:1: duplicate key 'train' (first given on line 5)" in result.output


def test_negative_budget_is_a_config_error(foundry_pm, cli_runner, tmp_path):
    """Before: ``train.budget.steps=-5`` trained nothing and exported."""
    (tmp_path / "run.yaml").write_text(RUN.replace("OUT", str(tmp_path / "o")))
    for override, needle in [
        ("train.budget.steps=-5", "train.budget.steps: must be >= 1, got -5"),
        ("train.batch.per_device=0", "train.batch.per_device: must be >= 1, got 0"),
        ("train.checkpoint.keep_last=0", "train.checkpoint.keep_last: must be >= 1, got 0"),
        ("train.log_every=0", "train.log_every: must be >= 1, got 0"),
    ]:
        result = invoke(foundry_pm, ["config", "validate", str(tmp_path / "run.yaml"), override], cli_runner)
        assert result.exit_code == 2 and needle in result.output, result.output
        result = invoke(foundry_pm, ["train", str(tmp_path / "run.yaml"), override], cli_runner)
        assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "o").exists()


def test_unwritable_or_impossible_run_folder_is_one_clear_error(foundry_pm, cli_runner, tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "run.yaml").write_text(RUN.replace("OUT", str(tmp_path / "a_file" / "run")))
    result = invoke(foundry_pm, ["train", str(tmp_path / "run.yaml")], cli_runner)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"run folder {tmp_path / 'a_file' / 'run'}: cannot write there" in result.output
    assert "set run.out_dir to a writable folder" in result.output
    result = invoke(foundry_pm, ["--debug", "train", str(tmp_path / "run.yaml")], cli_runner)
    assert result.exit_code == 2 and "Traceback" in result.output


def test_os_errors_name_the_path_exit_2(foundry_pm, cli_runner, tmp_path):
    import click

    from foundry_core.cli.main import build_cli

    cli = build_cli(lambda: foundry_pm)

    @cli.command("touch-it")
    def touch_it():
        (tmp_path / "no" / "such" / "dir" / "f").write_text("x")
        click.echo("unreachable")

    result = cli_runner.invoke(cli, ["touch-it"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        f"{tmp_path / 'no' / 'such' / 'dir' / 'f'}: No such file or directory; check the path"
        in result.output
    )


def test_help_imports_no_torch():
    modules, out = modules_imported_by("from foundry_core.cli.main import main\nmain(['--help'])")
    assert "Commands:" in out.stdout
    assert "torch" not in modules


def test_command_of_a_missing_package_says_what_to_install(foundry_pm, cli_runner):
    from foundry_core.first_party import FIRST_PARTY_COMMANDS

    for path, plugin in FIRST_PARTY_COMMANDS.items():  # core only: none of them is installed
        result = invoke(foundry_pm, path.split(), cli_runner)
        assert result.exit_code == 2, (path, result.output)
        assert f"'foundry {path}' is provided by {plugin}" in result.output
        assert f"install {plugin.replace('foundry-', 'foundry-robotics-')}" in result.output
    result = invoke(foundry_pm, ["nosuch"], cli_runner)
    assert result.exit_code == 2 and "No such command 'nosuch'" in result.output
