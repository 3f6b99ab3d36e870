"""``foundry serve --protocol lbm`` driven by a client built from our ``lbm_policy.proto`` (LBM Eval's wire
protocol): health -> metadata -> reset -> steps for concurrent clients (batched == unbatched), camera map
+ resize, every malformed request, evicted sessions, port refusal, and our runner as an LBM client."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foundry_core.errors import ConfigError, FoundryError
from foundry_eval.rollout.fake_task import ConstantPolicy, CrashingPolicy, NaNPolicy
from foundry_eval.serving import lbm_policy_pb2 as lbm
from foundry_eval.serving import lbm_policy_pb2_grpc as lbm_grpc
from foundry_eval.serving.codec import resize_frame
from foundry_eval.serving.lbm_camera_map import parse_camera_map
from foundry_eval.serving.lbm_codec import LbmLayout
from foundry_eval.serving.lbm_server import SERVICES, start_lbm_server
from foundry_eval.serving.server import PolicyServer
from foundry_eval.serving.session import PolicySessions

torch = pytest.importorskip("torch")
ARM = "right::panda"  # a flat 10-D policy's one arm (LBM order: right first)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


@pytest.fixture(scope="module")
def vla_export(tmp_path_factory):
    """A tiny untrained foundry-action VLA export (cameras scene + wrist at 32 px, 10-D proprio/action)."""
    import foundry_action.plugin
    from foundry_action.policy import Policy
    from foundry_action.testing import export_tiny_vla, make_tiny_store
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import collect

    tmp = tmp_path_factory.mktemp("lbm")
    pm = make_plugin_manager(entry_points_enabled=False)  # module scope: the function-scoped foundry_pm cannot serve
    pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(pm)
    registry = collect(pm)
    out = export_tiny_vla(registry, make_tiny_store(tmp / "episodes.zarr", lengths=(12, 12)), tmp / "export")
    return out, functools.partial(Policy.from_pretrained, str(out), registry=registry)


@pytest.fixture
def serve():
    started = []

    def start(policy_factory, **kw):
        server = start_lbm_server("test", port=0, policy_factory=policy_factory, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(0)


class LbmTestClient:
    """What LBM Eval's client does, with stubs generated from our .proto."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.step_stub = lbm_grpc.PolicyStepServiceStub(self.channel)
        self.reset_stub = lbm_grpc.PolicyResetServiceStub(self.channel)
        self.meta_stub = lbm_grpc.GetPolicyMetadataServiceStub(self.channel)

    def reset(self, client: str, seed: int) -> bool:
        return self.reset_stub.PolicyReset(
            lbm.PolicyResetRequest(client_identifier=client, seed=seed)
        ).success

    def step(self, client: str, observation: lbm.MultiarmObservation) -> lbm.PolicyStepResponse:
        return self.step_stub.PolicyStep(
            lbm.PolicyStepRequest(client_identifier=client, observation=observation)
        )

    def close(self) -> None:
        self.channel.close()


def _pose(status, xyz, rot=np.eye(3)):
    status.pose.translation.extend(list(map(float, xyz)))
    status.pose.rotation.extend(np.asarray(rot, dtype=float).reshape(-1).tolist())


def observation(
    step: int, client: int = 0, *, size=(32, 32), cameras=("scene", "wrist")
) -> lbm.MultiarmObservation:
    """A deterministic observation of ``client`` at ``step``: both arms, grippers, cameras by serial."""
    rng = np.random.default_rng(1000 * client + step)
    msg = lbm.MultiarmObservation(
        version=20241212, use_language_instruction=True, language_instruction="do thing number 0"
    )
    for state in (msg.robot.actual, msg.robot.desired):
        for arm, offset in ((ARM, 0.0), ("left::panda", 0.3)):
            _pose(state.pose_status.add(robot_name=arm), [0.1 * client + 0.01 * step, offset, 0.2])
            state.gripper_status.add(gripper_name=arm + "_hand", gripper_position=0.04)
    for serial in cameras:
        image = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
        cam = msg.visuo.add(camera_serial=serial, has_rgb=True)
        cam.camera_rgb.image.CopyFrom(
            lbm.Image(height=size[0], width=size[1], channels=3, data=image.tobytes())
        )
    return msg


def _action(response: lbm.PolicyStepResponse) -> np.ndarray:
    assert response.success
    poses = {p.robot_name: p for p in response.action.pose_status}
    grippers = {g.gripper_name: g.gripper_position for g in response.action.gripper_status}
    return np.concatenate([poses[ARM].pose.translation, poses[ARM].pose.rotation, [grippers[ARM + "_hand"]]])


def _episodes(address: str, clients: int, steps: int) -> dict[int, np.ndarray]:
    """``clients`` threads, each: reset(seed) then ``steps`` steps; returns every client's actions."""
    client = LbmTestClient(address)
    out: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(c: int) -> None:
        try:
            assert client.reset(f"client-{c}", seed=c)
            out[c] = np.stack([_action(client.step(f"client-{c}", observation(t, c))) for t in range(steps)])
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    client.close()
    assert not errors, errors
    return out


def test_health_metadata_reset_and_batched_steps_equal_unbatched(vla_export, serve):
    export_dir, factory = vla_export
    server = serve(factory, execute_steps=1)
    client = LbmTestClient(server.address)
    for service in ("", *SERVICES):
        status = client.health.Check(health_pb2.HealthCheckRequest(service=service), wait_for_ready=True)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    response = client.meta_stub.GetPolicyMetadata(lbm.GetPolicyMetadataRequest(client_identifier="x"))
    md = response.policy_metadata
    assert response.success and md.checkpoint_path == str(export_dir.resolve())
    assert md.is_language_conditioned and md.skill_type == "Undefined"
    assert "vla" in md.raw_policy_config and "flow_matching" in md.raw_policy_config
    info = md.runtime_information
    assert info["torch"] == torch.__version__ and info["device"] == "cpu" and "cuda_available" in info
    assert json.loads(info["cameras"]) == ["scene", "wrist"] and info["batch_max_size"] == "1"
    export_meta = json.loads((export_dir / "foundry_export.json").read_text())
    assert md.git_sha == export_meta.get("git_sha", "")  # recorded at export time (empty outside a checkout)
    client.close()

    alone = _episodes(server.address, clients=3, steps=20)
    batched_server = serve(factory, execute_steps=1, batch_max_size=3, batch_timeout_s=2.0)
    together = _episodes(batched_server.address, clients=3, steps=20)
    assert batched_server.batcher.mean_batch_size > 1.5  # the steps really were batched
    assert server.batcher.mean_batch_size == 1.0
    assert not np.allclose(alone[0], alone[1])  # clients differ: the comparison has teeth
    for c in range(3):
        assert alone[c].shape == (20, 13)
        np.testing.assert_allclose(together[c], alone[c], rtol=0, atol=1e-5)


def test_camera_map_and_resize(vla_export, serve, tmp_path):
    _, factory = vla_export
    cmap = tmp_path / "cameras.yaml"
    cmap.write_text("cameras:\n  SER_SCENE: scene\n  SER_WRIST: wrist\n  SER_OTHER: scene_left_0\n")
    server = serve(factory, camera_map=str(cmap), execute_steps=1)
    client = LbmTestClient(server.address)
    big = observation(0, size=(48, 64), cameras=("SER_SCENE", "SER_WRIST", "SER_OTHER"))
    assert client.reset("a", 5)
    from_big = _action(client.step("a", big))
    # the same frames, resized by us beforehand, give the same action: the server resized them
    small = observation(0, size=(48, 64), cameras=("SER_SCENE", "SER_WRIST", "SER_OTHER"))
    for cam in small.visuo:
        frame = np.frombuffer(cam.camera_rgb.image.data, np.uint8).reshape(48, 64, 3)
        cam.camera_rgb.image.CopyFrom(
            lbm.Image(height=32, width=32, channels=3, data=resize_frame(frame, (32, 32)).tobytes())
        )
    assert client.reset("a", 5)
    np.testing.assert_allclose(_action(client.step("a", small)), from_big, atol=1e-6)
    with pytest.raises(grpc.RpcError) as info:  # a camera of the policy without a serial in the map
        client.step("a", observation(1, cameras=("SER_SCENE", "scene_left_0")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing camera(s) wrist (serial 'SER_WRIST')" in info.value.details()
    client.close()
    with pytest.raises(ConfigError, match=r"camera\(s\) \['wrist'\] have no serial"):
        LbmLayout.from_metadata(
            {"cameras": ["scene", "wrist"], "proprio_dim": 10}, parse_camera_map({"S": "scene"}, "m")
        )
    # the map recorded in an export (from the store's camera_id_to_semantic_name) is used without --camera-map
    from foundry_eval.serving.lbm_codec import decode_observation

    recorded = LbmLayout.from_metadata(
        {
            "cameras": ["scene"],
            "image_size": [16, 16],
            "proprio_dim": 10,
            "camera_id_to_semantic_name": {"S1": "scene"},
        }
    )
    obs = decode_observation(observation(0, size=(20, 24), cameras=("S1", "S2")), recorded)
    assert list(obs["images"]) == ["scene"] and obs["images"]["scene"].shape == (16, 16, 3)
    with pytest.raises(ConfigError, match="did you mean 'cameras'"):
        parse_camera_map({"camera": {"S": "scene"}, "arms": ["right::panda"]}, "m.yaml")


def _set(path: str, value):
    return lambda m: exec(f"m.{path} = value", {"m": m, "value": value})


@pytest.mark.parametrize(
    "client_id, mutate, field",
    [
        ("", lambda m: None, "client_identifier"),
        (
            "c",
            _set("visuo[0].camera_rgb.image.data", b"\0" * 5),
            "observation.visuo['scene'].camera_rgb.image.data",
        ),
        (
            "c",
            _set("visuo[0].camera_rgb.image.dtype", lbm.DTYPE_UINT16),
            "observation.visuo['scene'].camera_rgb.image.dtype",
        ),
        (
            "c",
            _set("visuo[1].camera_serial", "SER_123"),
            "observation.visuo[1].camera_serial: unknown camera 'SER_123'",
        ),
        ("c", lambda m: m.visuo.pop(), "observation.visuo: missing camera(s) wrist"),
        (
            "c",
            _set("robot.actual.pose_status[0].pose.translation[1]", float("nan")),
            "observation.robot.actual.pose_status['right::panda'].pose.translation",
        ),
        (
            "c",
            _set("robot.desired.pose_status[1].pose.rotation[4]", float("inf")),
            "observation.robot.desired.pose_status['left::panda'].pose.rotation",
        ),
        (
            "c",
            lambda m: m.robot.actual.pose_status.pop(0),
            "observation.robot.actual.pose_status: no robot named 'right::panda'",
        ),
        ("c", lambda m: m.robot.actual.gripper_status.pop(0), "no gripper named 'right::panda_hand'"),
        (
            "c",
            lambda m: m.robot.actual.pose_status[0].pose.rotation.pop(),
            "pose.rotation: expected 9 values",
        ),
        ("c", _set("use_language_instruction", False), "observation.language_instruction"),
    ],
)
def test_malformed_requests_are_invalid_argument(vla_export, serve, client_id, mutate, field):
    _, factory = vla_export
    server = serve(factory)
    client = LbmTestClient(server.address)
    assert client.reset("c", 1)
    bad = observation(0)
    mutate(bad)
    with pytest.raises(grpc.RpcError) as info:
        client.step(client_id, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert field in info.value.details() and "Traceback" not in info.value.details()
    assert client.step("c", observation(1)).success  # the server keeps serving
    client.close()


def test_evicted_unknown_crashing_and_nan(serve):
    server = serve(ConstantPolicy, max_sessions=1)
    client = LbmTestClient(server.address)
    obs = observation(0, cameras=("scene",), size=(16, 16))
    assert client.reset("a", 0) and client.reset("b", 0)
    with pytest.raises(grpc.RpcError) as info:
        client.step("a", obs)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "evicted" in info.value.details() and "max_sessions=1" in info.value.details()
    with pytest.raises(grpc.RpcError, match="Step before Reset"):
        client.step("never", obs)
    response = client.step("b", obs)
    # a 10-D policy commands right::panda; left::panda keeps its desired pose: every arm is answered
    assert [p.robot_name for p in response.action.pose_status] == [ARM, "left::panda"]
    assert list(response.action.pose_status[1].pose.translation) == [0.0, 0.3, 0.2]
    client.close()

    nan_client = LbmTestClient(serve(NaNPolicy, execute_steps=1).address)
    assert nan_client.reset("n", 0)
    assert nan_client.step("n", obs).success
    assert not nan_client.step("n", obs).success  # an unusable action: success false, not a crash
    crash_client = LbmTestClient(serve(CrashingPolicy).address)
    assert crash_client.reset("c", 0)
    with pytest.raises(grpc.RpcError) as info:
        crash_client.step("c", obs)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError: policy bug" in info.value.details() and "Traceback" not in info.value.details()
    nan_client.close()
    crash_client.close()


def test_port_in_use_is_refused_for_both_protocols(serve):
    server = serve(ConstantPolicy)
    with pytest.raises(FoundryError, match="port is in use"):
        start_lbm_server("test", port=server.port, policy_factory=ConstantPolicy)
    with pytest.raises(FoundryError, match="port is in use"):
        PolicyServer(PolicySessions(ConstantPolicy), port=server.port)
    code = f"from foundry_core.cli.main import main; main(['serve', '--protocol', 'lbm', '--policy', 'random', '--port', '{server.port}'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "port is in use" in done.stderr, done.stderr


@pytest.mark.timeout(120)
def test_cli_serve_lbm_random_through_our_lbm_client():
    from foundry_core.export import code_version
    from foundry_eval.serving.lbm_client import LbmPolicyClient

    code = "from foundry_core.cli.main import main; main(['serve', '--protocol', 'lbm', '--policy', 'random', '--port', '0'])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving random (LBM Eval protocol) on 127.0.0.1:"), line + proc.stderr.read()
        address = line.split(" on ")[1].split()[0]
        with LbmPolicyClient(address, connect_timeout_s=30) as client:
            md = client.metadata()
            assert md["name"] == "random" and md["config_yaml"].startswith("action_dim: 20")
            assert md["git_sha"] == code_version().get("git_sha", "")  # the serving code's commit
            client.reset("e", 5)
            proprio = np.tile(np.array([0.1, 0, 0.2, 1, 0, 0, 0, 1, 0, 0.04], np.float32), 2)
            action = client.step("e", {"images": {}, "proprio": proprio, "instruction": ""})
            assert action.shape == (20,) and np.isfinite(action).all()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "LBM policy server for random" in err and "reset client e (seed 5)" in err


def test_runner_as_lbm_client_equals_in_process(vla_export, serve, tmp_path):
    from foundry_eval.rollout.runner import run_rollouts

    _, factory = vla_export
    server = serve(factory, execute_steps=2)
    tasks = [{"name": "point_reach", "time_limit_s": 1.0}]
    kw = {"progress": False, "timestamp": "2026-01-01T00-00-00", "execute_steps": 2}
    (local,) = run_rollouts(factory, tasks, 2, tmp_path / "local", "vla", **kw)
    (remote,) = run_rollouts(
        None, tasks, 2, tmp_path / "lbm", "vla", server=server.address, protocol="lbm", **kw
    )
    a, b = (json.loads(p.read_text()) for p in (local, remote))
    assert a["num_crashed"] == 0 == b["num_crashed"], b["evaluations"][0]["failure_message"]
    assert all(
        e["failure_message"] is None and e["total_time"] == pytest.approx(1.0) for e in b["evaluations"]
    )
    strip = lambda doc: [{k: v for k, v in e.items() if k != "wall_time"} for e in doc["evaluations"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_temporal_ensembling_served_equals_in_process(vla_export, serve):
    from foundry_action.executor import ChunkExecutor
    from foundry_eval.serving.codec import rot6d_to_matrix
    from foundry_eval.serving.lbm_codec import decode_observation

    _, factory = vla_export
    server = serve(factory, ensemble="temporal", batch_max_size=2, batch_timeout_s=0.5)
    assert server.metadata.runtime_information["ensemble"] == "temporal"
    client = LbmTestClient(server.address)
    local = ChunkExecutor(factory(), ensemble="temporal")
    local.reset(seed=7)
    assert client.reset("t", 7)
    for step in range(6):
        msg = observation(step, 2)
        expected = local.step(decode_observation(msg, server.layout))
        got = _action(client.step("t", msg))
        np.testing.assert_allclose(got[:3], expected[:3], atol=1e-5)
        np.testing.assert_allclose(got[3:12], rot6d_to_matrix(expected[3:9]).reshape(-1), atol=1e-5)
        np.testing.assert_allclose(got[12], expected[9], atol=1e-6)
    assert local.plans == 6  # temporal ensembling plans every step
    client.close()


def test_cli_eval_run_protocol_lbm(serve, tmp_path, cli_runner):
    from foundry_core.cli.main import build_cli

    server = serve(functools.partial(ConstantPolicy, offset=(0.05, 0.0)))
    args = ["eval", "run", "--server", server.address, "--protocol", "lbm", "--tasks", "point_reach"]
    result = cli_runner.invoke(build_cli(), [*args, "--episodes", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "PointReach: " in result.output and "/2 successes" in result.output
    doc = json.loads(next(tmp_path.glob("served/PointReach/rollouts/*/results.json")).read_text())
    assert doc["num_crashed"] == 0 and all(e["failure_message"] is None for e in doc["evaluations"])
    assert len(server.sessions) == 2  # one LBM episode per scenario (LBM has no end-of-episode call)
