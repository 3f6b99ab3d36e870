"""Regenerate ``policy_pb2.py``, ``policy_pb2.pyi`` and ``policy_pb2_grpc.py`` from ``policy.proto``.

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
PROTO = SERVING_DIR / "policy.proto"
GENERATED = ("policy_pb2.py", "policy_pb2.pyi", "policy_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run ``grpc_tools.protoc`` on ``policy.proto`` into ``out_dir``; make imports package-relative."""
    from grpc_tools import protoc  # dev dependency, imported only here

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{SERVING_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO.name,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {PROTO}")
    grpc_file = out_dir / "policy_pb2_grpc.py"
    text = grpc_file.read_text()
    # protoc writes `import policy_pb2 as ...`, which only works with the folder on sys.path.
    text = re.sub(r"^import policy_pb2 as", "from . import policy_pb2 as", text, flags=re.MULTILINE)
    grpc_file.write_text(text)
    return [out_dir / name for name in GENERATED]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            (SERVING_DIR / path.name).write_text(path.read_text())
            sys.stdout.write(f"wrote {SERVING_DIR / path.name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
