"""A real (tiny, untrained) foundry-action VLA export evaluated on the fake simulator, in-process and served."""

from __future__ import annotations

import functools
import json

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def vla_factory(foundry_pm, tiny_episodes, tmp_path):
    import foundry_action.plugin
    from foundry_action.policy import Policy
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.export import export_model
    from foundry_core.registry import BuildContext, collect

    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(foundry_pm)
    registry = collect(foundry_pm)
    node = {
        "name": "vla",
        "backbone": {"name": "tiny_test", "width": 16},
        "expert": {"name": "flow_matching", "preset": "debug", "inference_steps": 2},
        "data": {
            "name": "zarr_episodes",
            "path": str(tiny_episodes),
            "past": 1,
            "future": 3,
            "image_offsets": [-1, 0],
        },
    }
    torch.manual_seed(0)
    out = export_model(registry.build("model", node, BuildContext(registry)), node, tmp_path / "export")
    return functools.partial(Policy.from_pretrained, str(out), registry=registry)


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
