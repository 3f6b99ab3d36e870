"""Regenerate ``<name>_pb2.py``, ``<name>_pb2.pyi`` and ``<name>_pb2_grpc.py`` from each ``.proto`` here.

``policy.proto`` is Foundry's own protocol, ``lbm_policy.proto`` LBM Eval's (package ``lbm_policy_interface``).

The generated files are committed so that users need no ``grpcio-tools``. Run
``uv run python -m foundry_eval.serving.codegen`` after editing the ``.proto``;
``tests/test_eval_serving_codegen.py`` checks that regenerating reproduces the committed files.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

SERVING_DIR = Path(__file__).resolve().parent
PROTOS = (SERVING_DIR / "policy.proto", SERVING_DIR / "lbm_policy.proto")


def generated_names(proto: Path) -> tuple[str, str, str]:
    """The three files protoc writes for ``proto``."""
    stem = proto.stem
    return (f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run ``grpc_tools.protoc`` on every ``.proto`` into ``out_dir``; make imports package-relative."""
    from grpc_tools import protoc  # dev dependency, imported only here

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for proto in PROTOS:
        args = [
            "grpc_tools.protoc",
            f"-I{SERVING_DIR}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            proto.name,
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {proto}")
        names = generated_names(proto)
        grpc_file = out_dir / names[2]
        text = grpc_file.read_text()
        # protoc writes `import x_pb2 as ...`, which only works with the folder on sys.path.
        pb2 = proto.stem + "_pb2"
        text = re.sub(rf"^import {pb2} as", f"from . import {pb2} as", text, flags=re.MULTILINE)
        grpc_file.write_text(text)
        written += [out_dir / name for name in names]
    return written


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            (SERVING_DIR / path.name).write_text(path.read_text())
            sys.stdout.write(f"wrote {SERVING_DIR / path.name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
