"""Policy server/client on 127.0.0.1 (ephemeral port): round trip, validation errors, sessions, served == in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

from foundry_eval.rollout.fake_task import ConstantPolicy, CrashingPolicy, NaNPolicy, PointReach
from foundry_eval.rollout.policies import RandomPolicy
from foundry_eval.rollout.runner import run_rollouts
from foundry_eval.serving import policy_pb2 as pb
from foundry_eval.serving import policy_pb2_grpc as pb_grpc
from foundry_eval.serving.client import GrpcPolicyClient, PolicyServerError
from foundry_eval.serving.codec import (
    MAX_MESSAGE_BYTES,
    PolicyOutputError,
    canonical_action,
    encode_observation,
    normalize_metadata,
    rot6d_to_matrix,
)
from foundry_eval.serving.server import PolicyServer
from foundry_eval.serving.session import InProcessClient, PolicySessions


@pytest.fixture
def served():
    """Start a server for a policy factory; yields (server, client) and stops both."""
    started = []

    def start(factory, **kw):
        server = PolicyServer(PolicySessions(factory, **kw), host="127.0.0.1", port=0).start()
        client = GrpcPolicyClient(server.address, connect_timeout_s=10)
        started.append((server, client))
        return server, client

    yield start
    for server, client in started:
        client.close()
        server.stop(0)


def _obs(seed=3, size=16):
    env = PointReach(PointReach.Config(image_size=size))
    return env.reset(seed)


def test_round_trip_matches_in_process(served):
    server, client = served(lambda: ConstantPolicy(offset=(0.01, 0.0)), execute_steps=2)
    local = InProcessClient(PolicySessions(lambda: ConstantPolicy(offset=(0.01, 0.0)), execute_steps=2))
    assert client.healthy()
    assert client.metadata() == local.metadata()
    md = client.metadata()
    assert md["name"] == "constant" and json.loads(md["runtime_info"]["cameras"]) == ["scene"]
    env_a, env_b = PointReach(), PointReach()
    obs_a, obs_b = env_a.reset(7), env_b.reset(7)
    client.reset("ep-1", 7)
    local.reset("ep-1", 7)
    for _ in range(5):
        a, b = client.step("ep-1", obs_a), local.step("ep-1", obs_b)
        assert a.dtype == np.float32 and a.shape == (10,)
        np.testing.assert_array_equal(a, b)
        obs_a, obs_b = env_a.step(a), env_b.step(b)
    client.end("ep-1")
    assert len(server.sessions) == 0


def _raw_step(server, client_id="c", observation=None):
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PolicyServiceStub(channel)
        stub.Reset(pb.ResetRequest(client_id="c", seed=1))
        return stub.Step(pb.StepRequest(client_id=client_id, observation=observation))


def _bad(mutate):
    msg = encode_observation(_obs())
    mutate(msg)
    return msg


@pytest.mark.parametrize(
    "client_id, mutate, needle",
    [
        ("", lambda m: None, "client_id: must not be empty"),
        (
            "c",
            lambda m: setattr(m.cameras[0].rgb, "dtype", "float32"),
            "observation.cameras['scene'].rgb.dtype",
        ),
        (
            "c",
            lambda m: setattr(m.cameras[0].rgb, "data", b"\0" * 5),
            "observation.cameras['scene'].rgb.data",
        ),
        (
            "c",
            lambda m: setattr(m.cameras[0].rgb, "channels", 4),
            "observation.cameras['scene'].rgb.channels",
        ),
        ("c", lambda m: setattr(m.cameras[0], "name", "wrist"), "unknown camera 'wrist'"),
        ("c", lambda m: m.cameras.pop(), "observation.cameras: missing camera(s) ['scene']"),
        ("c", lambda m: m.proprio.pop(), "observation.proprio: expected 10 proprio values, got 9"),
        ("c", lambda m: m.proprio.__setitem__(0, float("nan")), "observation.proprio: contains non-finite"),
    ],
)
def test_malformed_requests_are_invalid_argument(served, client_id, mutate, needle):
    server, _ = served(ConstantPolicy)  # declares cameras ['scene'] and proprio_dim 10
    with pytest.raises(grpc.RpcError) as info:
        _raw_step(server, client_id, _bad(mutate))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


def test_extra_cameras_can_be_allowed(served):
    server, client = served(ConstantPolicy, allow_extra_cameras=True)
    obs = _obs()
    obs["images"]["wrist"] = obs["images"]["scene"]
    client.reset("e", 0)
    assert client.step("e", obs).shape == (10,)
    with pytest.raises(grpc.RpcError, match="missing camera"):
        _raw_step(server, "c", _bad(lambda m: setattr(m.cameras[0], "name", "wrist")))


def test_step_before_reset_and_policy_errors(served):
    server, client = served(ConstantPolicy)
    with pytest.raises(PolicyServerError, match="Step before Reset") as info:
        client.step("never-reset", _obs())
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    _, nan_client = served(NaNPolicy, execute_steps=1)
    nan_client.reset("x", 1)
    nan_client.step("x", _obs())
    with pytest.raises(PolicyOutputError, match="non-finite"):
        nan_client.step("x", _obs())
    _, crash_client = served(CrashingPolicy)
    crash_client.reset("y", 1)
    with pytest.raises(PolicyServerError, match="INTERNAL: policy raised ZeroDivisionError: policy bug"):
        crash_client.step("y", _obs())


def test_message_cap(served):
    server, client = served(ConstantPolicy)
    side = int(np.sqrt(MAX_MESSAGE_BYTES / 3)) + 16
    obs = {"images": {"scene": np.zeros((side, side, 3), np.uint8)}, "proprio": np.zeros(10, np.float32)}
    client.reset("big", 0)
    with pytest.raises(PolicyServerError) as info:
        client.step("big", obs)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sessions_pool_and_eviction():
    made = []

    def factory():
        made.append(ConstantPolicy())
        return made[-1]

    sessions = PolicySessions(factory, max_sessions=2)
    sessions.reset("a", 0)
    sessions.reset("b", 0)
    assert len(made) == 2  # parallel episodes get their own instances
    sessions.end("a")
    sessions.reset("c", 0)
    assert len(made) == 2  # "a"'s instance is recycled
    sessions.reset("d", 0)  # at the cap: the least recently used session ("b") is evicted
    assert len(made) == 2 and len(sessions) == 2
    with pytest.raises(KeyError):
        sessions.step("b", _obs())


def test_codec_actions():
    rng = np.random.default_rng(0)
    action = rng.normal(size=20).astype(np.float32)
    canon = canonical_action(action)
    np.testing.assert_array_equal(canonical_action(canon), canon)
    R = rot6d_to_matrix(canon[3:9])
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(R) == pytest.approx(1.0)
    with pytest.raises(PolicyOutputError, match="degenerate"):
        canonical_action(np.zeros(10, np.float32))
    md = normalize_metadata({"name": "p", "chunk_size": 8, "is_language_conditioned": True})
    assert md["runtime_info"] == {"chunk_size": "8"} and md["is_language_conditioned"] is True


def test_runner_through_grpc_equals_in_process(served, tmp_path):
    server, _ = served(RandomPolicy)
    easy = [{"name": "point_reach", "success_dist": 0.1}]
    kw = {"progress": False, "timestamp": "2026-01-01T00-00-00"}
    (local,) = run_rollouts(RandomPolicy, easy, 5, tmp_path / "local", "m", **kw)
    (remote,) = run_rollouts(None, easy, 5, tmp_path / "remote", "m", server=server.address, **kw)

    def outcomes(path):
        evals = json.loads(path.read_text())["evaluations"]
        return [{k: v for k, v in e.items() if k != "wall_time"} for e in evals]

    assert outcomes(local) == outcomes(remote)
    assert len({e["is_success"] for e in outcomes(local)}) == 2  # mixed outcomes: the comparison has teeth
    assert len(server.sessions) == 0  # every episode ended its session


@pytest.mark.timeout(60)
def test_cli_serve_random():
    code = (
        "import sys; from foundry_core.cli.main import main; "
        "main(['serve', '--policy', 'random', '--port', '0'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving random on 127.0.0.1:"), line + proc.stderr.read()
        address = line.split(" on ")[1].split()[0]
        with GrpcPolicyClient(address, connect_timeout_s=10) as client:
            assert client.metadata()["name"] == "random"
            client.reset("e", 5)
            assert client.step("e", _obs()).shape == (10,)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("protocol", ["foundry", "lbm"])
def test_ctrl_c_right_after_the_start_still_stops_the_server(protocol, monkeypatch, cli_runner):
    """A Ctrl-C between the start and the wait (the instant the "serving" line is printed) used to leave
    gRPC's threads running: the process never exited (the README test hung on it in CI)."""
    from foundry_core.cli.main import build_cli
    from foundry_eval.rollout import cli as rollout_cli
    from foundry_eval.serving.lbm_server import LbmPolicyServer
    from foundry_eval.serving.server import PolicyServer

    stopped = []
    for cls in (PolicyServer, LbmPolicyServer):
        real = cls.stop
        monkeypatch.setattr(cls, "stop", lambda self, *a, real=real: (stopped.append(type(self).__name__), real(self, *a))[1])

    def interrupted_echo(message=None, **kw):
        if message and str(message).startswith("serving"):
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(rollout_cli.click, "echo", interrupted_echo)
    result = cli_runner.invoke(build_cli(), ["serve", "--policy", "random", "--port", "0", "--protocol", protocol])
    assert result.exit_code == 0, result.output
    assert len(stopped) == 1


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_stops_on_a_signal_even_when_the_parent_ignored_sigint(sig):
    """A background job inherits SIGINT ignored; Python then never raises KeyboardInterrupt, and the
    server kept running after Ctrl-C (a CI run hung on it). Containers stop with SIGTERM."""
    import os
    import shlex
    import signal

    foundry = shlex.quote(os.path.join(os.path.dirname(sys.executable), "foundry"))
    # `trap "" INT` + exec: the server starts with SIGINT ignored, as a background job does (no preexec_fn:
    # fork in a process that has loaded gRPC can abort)
    proc = subprocess.Popen(
        ["bash", "-c", f'trap "" INT; exec {foundry} serve --policy random --port 0'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().startswith("serving random on")
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
