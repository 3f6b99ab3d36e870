"""The committed gRPC code is exactly what ``policy.proto`` generates, and matches the installed runtimes."""

from __future__ import annotations

import re

import pytest

from foundry_eval.serving import codegen


def test_regenerating_gives_the_committed_files(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev dependency) regenerates the code")
    for path in codegen.generate(tmp_path):
        committed = codegen.SERVING_DIR / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `uv run python -m foundry_eval.serving.codegen`"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_gencode_matches_runtime_versions():
    import google.protobuf
    import grpc

    pb2 = (codegen.SERVING_DIR / "policy_pb2.py").read_text()
    gencode = _version(re.search(r"# Protobuf Python Version: (\S+)", pb2).group(1))
    runtime = _version(google.protobuf.__version__)
    assert gencode[0] == runtime[0] and gencode <= runtime, (gencode, runtime)
    grpc_gen = _version(
        re.search(
            r"GRPC_GENERATED_VERSION = '([^']+)'", (codegen.SERVING_DIR / "policy_pb2_grpc.py").read_text()
        ).group(1)
    )
    assert grpc_gen <= _version(grpc.__version__)
    grpc_file = (codegen.SERVING_DIR / "policy_pb2_grpc.py").read_text()
    assert "from . import policy_pb2 as policy__pb2" in grpc_file and "\nimport policy_pb2" not in grpc_file
