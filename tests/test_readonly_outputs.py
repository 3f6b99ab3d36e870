"""Read-only output folders, for real: each command exits 2 with one error naming the folder, no traceback.

Tests run as root here, and root writes into a ``chmod 0555`` folder all the same, so each command runs
in a subprocess without the capabilities that let root ignore file permissions (CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH, CAP_FOWNER, dropped from the bounding set by a small launcher before it execs
the command). Root without them is held
to the permission bits like any user, and still runs the interpreter (which lives under ``/root`` here,
out of reach of ``nobody``). As another user the commands run as they are. Skipped, saying why, when
the folder stays writable either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FOUNDRY = [sys.executable, "-c", "from foundry_core.cli.main import main; main()"]
PR_CAPBSET_DROP = 24  # linux/prctl.h
DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (linux/capability.h)


#: A fresh interpreter that drops (as root) the capabilities that bypass permission bits from its bounding
#: set, then execs the command: exec applies the drop. Not a ``preexec_fn``: that runs Python in the
#: forked child of this test process, where gRPC (loaded by earlier tests) has threads and fork handlers,
#: and the child aborted in gRPC's poller now and then (SIGABRT, "epoll_wait error: Bad file descriptor").
HELD_TO_PERMISSIONS = f"""
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in {DAC_CAPABILITIES!r}:
        if libc.prctl({PR_CAPBSET_DROP}, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {{cap}})")
os.execv(sys.argv[1], sys.argv[1:])
"""


def _held_to_permissions(cmd: list[str]) -> list[str]:
    """``cmd`` run without the DAC capabilities (see ``HELD_TO_PERMISSIONS``)."""
    return [sys.executable, "-c", HELD_TO_PERMISSIONS, *cmd]


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        _held_to_permissions([*FOUNDRY, *args]), env=env, capture_output=True, text=True, timeout=timeout
    )


def _make_read_only(path: Path) -> None:
    for dirpath, dirs, files in os.walk(path):
        for name in files:
            os.chmod(Path(dirpath) / name, 0o444)
        for name in dirs:
            os.chmod(Path(dirpath) / name, 0o555)
    os.chmod(path, 0o555)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Writable inputs: a WebDataset source, a toy training config, a results tree; a read-only store."""
    from foundry_action.testing import make_tiny_store, synthetic_episode, write_synthetic_wds
    from foundry_eval.results import results_path, write_results

    root = tmp_path_factory.mktemp("inputs")
    episodes = [synthetic_episode(4, seed=i, image_size=8) for i in range(2)]
    write_synthetic_wds(root / "wds", episodes, future=2, samples_per_shard=8)
    evaluations = [{"skill_type": "TaskA", "scenario_index": i, "is_success": i % 2 == 0} for i in range(10)]
    write_results(results_path(root / "tree", "m", "TaskA", "2026-01-01T00-00-00"), evaluations, 10)
    # with stats/ (what `foundry data stats` rewrites):
    make_tiny_store(root / "read_only.zarr", lengths=[3, 4], image_size=8)
    _make_read_only(root / "read_only.zarr")
    config = {
        "run": {"name": "ro", "seed": 0},
        "model": {"name": "toy_regression", "width": 8},
        "data": {"mix": [{"source": {"name": "synthetic_regression", "num_samples": 16}}]},
        "train": {
            "budget": {"steps": 1},
            "batch": {"global": 4, "per_device": 4},
            "optim": {"name": "adamw"},
        },
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    yield root
    for dirpath, _dirs, _files in os.walk(root / "read_only.zarr"):  # so the tmp folder can be removed
        os.chmod(dirpath, 0o755)


@pytest.fixture
def read_only(tmp_path) -> Path:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    probe = subprocess.run(
        _held_to_permissions([sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"]),
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        folder.chmod(0o755)
        pytest.skip(
            "cannot get a read-only folder here: a chmod 0555 folder stays writable (root whose "
            "DAC capabilities cannot be dropped)"
        )
    yield folder
    folder.chmod(0o755)


def _assert_one_clear_error(res: subprocess.CompletedProcess, folder: Path) -> None:
    output = res.stdout + res.stderr
    assert res.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(folder) in errors[0], output


CASES = {
    "train, new run folder inside": lambda i, ro: [
        "train",
        str(i / "train.yaml"),
        f"run.out_dir={ro / 'run'}",
    ],
    "train, the run folder itself": lambda i, ro: ["train", str(i / "train.yaml"), f"run.out_dir={ro}"],
    "data convert, new store inside": lambda i, ro: ["data", "convert", str(i / "wds"), str(ro / "out.zarr")],
    "data convert, the folder itself": lambda i, ro: ["data", "convert", str(i / "wds"), str(ro)],
    "eval demos --out, new store inside": lambda i, ro: [
        *("eval", "demos", "put_on_plate", "--episodes", "1", "--image-size", "16"),
        *("--out", str(ro / "demos.zarr")),
    ],
    "eval demos --out, the folder itself": lambda i, ro: [
        *("eval", "demos", "put_on_plate", "--episodes", "1", "--image-size", "16", "--out", str(ro)),
    ],
    "eval run --out (results.json)": lambda i, ro: [
        *(
            "eval",
            "run",
            "--policy",
            "random",
            "--tasks",
            "reach_target",
            "--episodes",
            "1",
            "--out",
            str(ro),
        ),
    ],
    "eval compare --out (report)": lambda i, ro: [
        "eval",
        "compare",
        str(i / "tree"),
        "--out",
        str(ro / "report"),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_read_only_output_folder_is_one_clear_error(inputs, read_only, case):
    res = _run(CASES[case](inputs, read_only))
    _assert_one_clear_error(res, read_only)
    assert not any(read_only.iterdir())  # nothing written, nothing swapped in
    assert read_only.stat().st_mode & 0o777 == 0o555  # and the folder was not replaced by a writable one


def test_stats_into_a_read_only_store_is_one_clear_error(inputs, read_only):
    """``foundry data stats`` on a read-only store used to end in a SafetensorError traceback."""
    store = inputs / "read_only.zarr"
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    _assert_one_clear_error(_run(["data", "stats", str(store)]), store)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
