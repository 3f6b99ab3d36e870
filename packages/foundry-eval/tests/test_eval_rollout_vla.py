"""A real (tiny, untrained) foundry-action VLA export evaluated on the fake simulator, in-process and served."""

from __future__ import annotations

import functools
import json

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def vla_factory(action_registry, tiny_episodes, tmp_path):
    from foundry_action.policy import Policy
    from foundry_action.testing import export_tiny_vla

    out = export_tiny_vla(action_registry, tiny_episodes, tmp_path / "export")
    return functools.partial(Policy.from_pretrained, str(out), registry=action_registry)


def test_exported_vla_in_process_and_served(vla_factory, tmp_path):
    from foundry_eval.rollout.runner import run_rollouts
    from foundry_eval.serving.server import PolicyServer
    from foundry_eval.serving.session import PolicySessions

    torch.set_num_threads(1)
    tasks = [{"name": "point_reach", "time_limit_s": 1.0}]
    kw = {"progress": False, "timestamp": "2026-01-01T00-00-00", "execute_steps": 2}
    (local,) = run_rollouts(vla_factory, tasks, 2, tmp_path / "local", "vla", **kw)
    with PolicyServer(PolicySessions(vla_factory, execute_steps=2), port=0) as server:
        (remote,) = run_rollouts(None, tasks, 2, tmp_path / "remote", "vla", server=server.address, **kw)
    a, b = (json.loads(p.read_text()) for p in (local, remote))
    assert a["num_crashed"] == 0, a["evaluations"][0]["failure_message"]
    # the env was rendered as the policy expects (cameras scene + wrist at 32 px): no observation errors
    assert all(
        e["failure_message"] is None and e["total_time"] == pytest.approx(1.0) for e in a["evaluations"]
    )
    strip = lambda doc: [{k: v for k, v in e.items() if k != "wall_time"} for e in doc["evaluations"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_served_vla_resizes_frames_and_rejects_bad_observations_cleanly(vla_factory):
    """Issue 16 (serving): frames of another size are resized (not INTERNAL + traceback); the policy's own
    validation errors are INVALID_ARGUMENT; an evicted episode says so (not "Step before Reset")."""
    import grpc
    import numpy as np

    from foundry_eval.serving.client import GrpcPolicyClient, PolicyServerError
    from foundry_eval.serving.server import PolicyServer
    from foundry_eval.serving.session import PolicySessions

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    proprio = rng.normal(size=10).astype(np.float32)
    obs = {
        "images": {cam: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for cam in ("scene", "wrist")},
        "proprio": proprio,
        "instruction": "do thing number 0",
    }
    with PolicyServer(PolicySessions(vla_factory, max_sessions=1), port=0) as server:
        with GrpcPolicyClient(server.address, connect_timeout_s=10) as client:
            client.reset("a", 0)
            assert client.step("a", obs).shape == (10,)  # 48x64 frames for a 32x32 policy: resized
            with pytest.raises(PolicyServerError) as info:
                client.step("a", {**obs, "instruction": ""})  # the policy needs an instruction
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "instruction" in info.value.details and "Traceback" not in info.value.details
            client.reset("b", 0)  # max_sessions=1: "a" is evicted
            with pytest.raises(PolicyServerError) as info:
                client.step("a", obs)
            assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "evicted" in info.value.details and "--max-sessions" in info.value.details
            assert client.step("b", obs).shape == (10,)
