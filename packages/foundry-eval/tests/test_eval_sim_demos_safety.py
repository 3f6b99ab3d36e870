"""``foundry eval demos --out`` never removes a folder it did not write (issue 16, class 1): a plain
folder is refused with or without --append, --append never deletes, an existing store is replaced only
with --overwrite (written beside it and swapped in), an unwritable --out is one clear error."""

from __future__ import annotations

import pytest

from foundry_action.store import open_store
from foundry_core.cli.main import build_cli
from foundry_core.errors import ConfigError, DataError
from foundry_eval.sim.demos import generate_demos

NODE = {"name": "put_on_plate", "cameras": []}


def _demos(cli_runner, out, *flags, episodes=1, seed=1_000_000):
    args = [
        "eval",
        "demos",
        "put_on_plate",
        "--episodes",
        str(episodes),
        "--cameras",
        "none",
        "--out",
        str(out),
    ]
    return cli_runner.invoke(build_cli(), [*args, "--seed-start", str(seed), *flags])


@pytest.mark.parametrize("flags", [(), ("--append",), ("--overwrite",)])
def test_plain_folder_is_never_removed(tmp_path, cli_runner, flags):
    out = tmp_path / "demos"
    out.mkdir()
    (out / "notes.txt").write_text("months of work")
    res = _demos(cli_runner, out, *flags)  # before: the folder was replaced, even with --append
    assert res.exit_code == 2 and "is not an episode store" in res.output, res.output
    assert (out / "notes.txt").read_text() == "months of work"


def test_append_keeps_and_adds_overwrite_replaces(tmp_path, cli_runner):
    out = tmp_path / "demos.zarr"
    assert _demos(cli_runner, out, episodes=2).exit_code == 0
    first = open_store(out).episode(0)["action"]
    res = _demos(cli_runner, out)
    assert res.exit_code == 2 and "use --overwrite" in res.output and len(open_store(out)) == 2
    res = _demos(cli_runner, out, "--append", seed=2_000_000)
    assert res.exit_code == 0, res.output
    store = open_store(out)
    assert len(store) == 3 and [store.meta(i)["seed"] for i in range(3)] == [1_000_000, 1_000_001, 2_000_000]
    assert (store.episode(0)["action"] == first).all()
    res = _demos(cli_runner, out, "--overwrite", seed=3_000_000)
    assert res.exit_code == 0, res.output
    assert [open_store(out).meta(0)["seed"]] == [3_000_000] and len(open_store(out)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.zarr"]  # no temporary sibling left behind
    res = _demos(cli_runner, out, "--append", "--overwrite")
    assert res.exit_code == 2 and "exclude each other" in res.output


def test_failed_replacement_keeps_the_previous_store(tmp_path):
    out = tmp_path / "demos.zarr"
    generate_demos(NODE, episodes=1, out=out)
    node = {"name": "stack_blocks", "cameras": [], "time_limit_s": 0.3}  # the expert cannot succeed in 0.3 s
    with pytest.raises(ConfigError, match="only 0 of 1 episodes succeeded"):
        generate_demos(node, episodes=1, out=out, overwrite=True, max_attempts=1)
    assert len(open_store(out)) == 1 and open_store(out).meta(0)["task"] == "put_on_plate"
    assert not (tmp_path / "demos.zarr.partial").exists()


def test_unwritable_out_is_one_clear_error(tmp_path, cli_runner):
    (tmp_path / "afile").write_text("x")
    res = _demos(cli_runner, tmp_path / "afile/demos")  # before: NotADirectoryError traceback
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    with pytest.raises(DataError, match="afile/demos: Not a directory"):
        generate_demos(NODE, episodes=1, out=tmp_path / "afile/demos", append=True)
