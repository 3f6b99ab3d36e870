"""Install only what you need, measured: foundry-eval alone in a fresh venv compares results.json files.

The venv gets the locked versions (``uv export`` of the package's dependencies as constraints), so
the test installs from uv's cache and measures what a user of that package would get. Slow (a fresh
venv of several GB): ``uv run pytest -m slow tests/test_fresh_install.py``. The same measurement for
every package, for the README's table::

    uv run python tests/test_fresh_install.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: README package table rows: (distribution, what to install from a clone)
PACKAGES = [
    ("foundry-robotics-core", "./packages/foundry-core"),
    ("foundry-robotics-vision", "./packages/foundry-vision"),
    ("foundry-robotics-action", "./packages/foundry-action"),
    ("foundry-robotics-eval", "./packages/foundry-eval"),
    ("foundry-robotics-eval", "./packages/foundry-eval[sim]"),
    ("foundry-robotics-pipeline", "./packages/foundry-pipeline"),
]


def tree_bytes(path: Path) -> int:
    """Bytes of every regular file below ``path`` (hard links from uv's cache count in full)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install_fresh(distribution: str, spec: str, venv: Path) -> int:
    """Create ``venv``, install ``spec`` (a clone path, extras allowed) at the locked versions; return its size."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    extras = spec.partition("[")[2].rstrip("]")
    constraints = venv.parent / f"{venv.name}-constraints.txt"
    export = [uv, "export", "--package", distribution, "--no-dev", "--frozen", "--no-hashes", "--no-emit-workspace"]
    export += [f"--extra={e}" for e in extras.split(",") if e]
    subprocess.run([*export, "-o", str(constraints)], cwd=ROOT, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    subprocess.run([uv, "venv", "--quiet", "--python", f"{sys.version_info.major}.{sys.version_info.minor}", str(venv)],
                   check=True, env=env)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-c", str(constraints),
                    spec], cwd=ROOT, check=True, env=env)
    return tree_bytes(venv)


@pytest.mark.slow
def test_foundry_eval_alone_compares_reference_results(tmp_path, shared_data, record_property):
    results = shared_data / "vla_foundry" / "eval_results"
    if not results.is_dir():
        pytest.skip(f"{results} is not present (reference results.json files)")
    size = install_fresh("foundry-robotics-eval", "./packages/foundry-eval", tmp_path / "eval-only")
    record_property("install_bytes", size)
    print(f"foundry-eval alone: {size / 1e9:.2f} GB")
    bin_dir = tmp_path / "eval-only" / "bin"
    import_drake = subprocess.run([str(bin_dir / "python"), "-c", "import pydrake"], capture_output=True)
    assert import_drake.returncode != 0, "drake was installed without the [sim] extra"
    out = subprocess.run([str(bin_dir / "foundry"), "eval", "compare", str(results), "--format", "csv"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "Foundry-VLA-1.7B" in line]
    assert len(rows) > 10, out.stdout[-2000:]
    # not installed here: the pipeline answers what to install
    missing = subprocess.run([str(bin_dir / "foundry"), "pipeline"], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and "install foundry-robotics-pipeline" in missing.stderr


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for i, (distribution, spec) in enumerate(PACKAGES):
            size = install_fresh(distribution, spec, Path(tmp) / f"venv{i}")
            print(f"{spec:<34} {size / 1e9:6.2f} GB", flush=True)
            shutil.rmtree(Path(tmp) / f"venv{i}")
