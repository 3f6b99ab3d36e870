"""The committed gRPC code is exactly what the ``.proto`` files generate and matches the installed runtimes;
``lbm_policy.proto`` has LBM Eval's names and field numbers (shared/docs/LBM_EVAL.md, restated here)."""

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
    lbm_grpc = (codegen.SERVING_DIR / "lbm_policy_pb2_grpc.py").read_text()
    assert "from . import lbm_policy_pb2 as lbm__policy__pb2" in lbm_grpc
    assert (
        pb2.split("Protobuf Python Version")[1][:12]
        in (codegen.SERVING_DIR / "lbm_policy_pb2.py").read_text()
    )


# LBM_EVAL.md, "Messages": message -> {field number: (name, type)}; "msg:X" / "enum:X" name the type.
# fmt: off
D, F, I32, U32, S, B, BY = "double", "float", "int32", "uint32", "string", "bool", "bytes"
LBM_MESSAGES = {
    "Time": {1: ("sec", I32), 2: ("nanosec", U32)},
    "Image": {1: ("height", I32), 2: ("width", I32), 3: ("channels", I32), 4: ("data", BY),
              5: ("dtype", "enum:ImageDtype"), 6: ("compression", "enum:ImageCompression")},
    "Header": {1: ("stamp", "msg:Time")},
    "CameraInfo": {1: ("height", I32), 2: ("width", I32), 3: ("distortion_model", S), 4: ("k", F),
                   5: ("header", "msg:Header")},
    "RigidTransform": {1: ("translation", D), 2: ("rotation", D)},
    "CameraImage": {1: ("image", "msg:Image"), 2: ("info", "msg:CameraInfo"), 3: ("pose", "msg:RigidTransform")},
    "CameraImageSet": {1: ("camera_serial", S), 2: ("has_rgb", B), 3: ("has_depth", B), 4: ("has_label", B),
                       5: ("camera_rgb", "msg:CameraImage"), 6: ("camera_depth", "msg:CameraImage"),
                       7: ("camera_label", "msg:CameraImage")},
    "RobotPoseStatus": {1: ("robot_name", S), 2: ("pose", "msg:RigidTransform"), 3: ("wrench", D),
                        4: ("external_wrench", D), 5: ("joint_position", D), 6: ("joint_velocity", D),
                        7: ("joint_torque", D), 8: ("joint_torque_external", D)},
    "RobotGripperStatus": {1: ("gripper_name", S), 2: ("gripper_position", D)},
    "PosesAndGrippers": {1: ("pose_status", "msg:RobotPoseStatus"), 2: ("gripper_status", "msg:RobotGripperStatus"),
                         3: ("timestamp_data", "msg:Time"), 4: ("timestamp_sent", "msg:Time"),
                         5: ("timestamp_received", "msg:Time")},
    "PosesAndGrippersActualAndDesired": {1: ("actual", "msg:PosesAndGrippers"), 2: ("desired", "msg:PosesAndGrippers"),
                                         3: ("version", D)},
    "MultiarmObservation": {1: ("robot", "msg:PosesAndGrippersActualAndDesired"), 2: ("visuo", "msg:CameraImageSet"),
                            3: ("version", D), 4: ("use_language_instruction", B), 5: ("language_instruction", S)},
    "PolicyStepRequest": {1: ("client_identifier", S), 2: ("observation", "msg:MultiarmObservation")},
    "PolicyStepResponse": {1: ("success", B), 2: ("action", "msg:PosesAndGrippers")},
    "PolicyResetRequest": {1: ("client_identifier", S), 2: ("seed", U32)},
    "PolicyResetResponse": {1: ("success", B)},
    "PolicyMetadata": {1: ("name", S), 2: ("skill_type", S), 3: ("checkpoint_path", S), 4: ("git_repo", S),
                       5: ("git_sha", S), 6: ("raw_policy_config", S), 7: ("is_language_conditioned", B),
                       8: ("runtime_information", "msg:RuntimeInformationEntry")},
    "GetPolicyMetadataRequest": {1: ("client_identifier", S)},
    "GetPolicyMetadataResponse": {1: ("success", B), 2: ("policy_metadata", "msg:PolicyMetadata")},
}
REPEATED = {("CameraInfo", "k"), ("RigidTransform", "translation"), ("RigidTransform", "rotation"),
            ("MultiarmObservation", "visuo"), ("PosesAndGrippers", "pose_status"),
            ("PosesAndGrippers", "gripper_status"), ("PolicyMetadata", "runtime_information")} | {
    ("RobotPoseStatus", n) for n in ("wrench", "external_wrench", "joint_position", "joint_velocity",
                                     "joint_torque", "joint_torque_external")}
# fmt: on


def _type_name(fd) -> str:
    from google.protobuf.descriptor import FieldDescriptor as FD

    if fd.type == FD.TYPE_MESSAGE:
        return f"msg:{fd.message_type.name}"
    if fd.type == FD.TYPE_ENUM:
        return f"enum:{fd.enum_type.name}"
    return {
        FD.TYPE_DOUBLE: D,
        FD.TYPE_FLOAT: F,
        FD.TYPE_INT32: I32,
        FD.TYPE_UINT32: U32,
        FD.TYPE_STRING: S,
        FD.TYPE_BOOL: B,
        FD.TYPE_BYTES: BY,
    }[fd.type]


def test_lbm_proto_matches_the_documented_wire_facts():
    from foundry_eval.serving import lbm_policy_pb2 as lbm

    file = lbm.DESCRIPTOR
    assert file.package == "lbm_policy_interface"
    assert set(file.message_types_by_name) == set(LBM_MESSAGES)
    for name, fields in LBM_MESSAGES.items():
        desc = file.message_types_by_name[name]
        got = {fd.number: (fd.name, _type_name(fd)) for fd in desc.fields}
        assert got == fields, name
        for fd in desc.fields:
            assert ((name, fd.name) in REPEATED) == fd.is_repeated, (name, fd.name)
    entry = file.message_types_by_name["PolicyMetadata"].fields_by_name["runtime_information"].message_type
    assert entry.GetOptions().map_entry and [f.type for f in entry.fields] == [9, 9]  # map<string, string>
    assert {e.name: e.number for e in file.enum_types_by_name["ImageDtype"].values} == {
        "DTYPE_UINT8": 0,
        "DTYPE_INT8": 1,
        "DTYPE_UINT16": 2,
        "DTYPE_INT16": 3,
    }
    assert {e.name: e.number for e in file.enum_types_by_name["ImageCompression"].values} == {
        "NONE": 0,
        "JPG": 1,
        "PNG": 2,
    }
    services = {
        s.name: {m.name: (m.input_type.name, m.output_type.name) for m in s.methods}
        for s in file.services_by_name.values()
    }
    assert services == {
        "PolicyStepService": {"PolicyStep": ("PolicyStepRequest", "PolicyStepResponse")},
        "PolicyResetService": {"PolicyReset": ("PolicyResetRequest", "PolicyResetResponse")},
        "GetPolicyMetadataService": {
            "GetPolicyMetadata": ("GetPolicyMetadataRequest", "GetPolicyMetadataResponse")
        },
    }
