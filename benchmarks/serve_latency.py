"""LBM serving: latency (p50/p99) of one LBM ``PolicyStep`` at 6 cameras x 224², and the throughput that
cross-client batching buys with 8 concurrent clients.

A tiny VLA (foundry_action.tiny_backbone, flow matching ``debug`` expert, 4 Euler steps; 6 cameras x
224x224, 20-D proprio/actions) is served by ``foundry serve --protocol lbm``'s server on 127.0.0.1;
clients built from our ``lbm_policy.proto`` send full observations (6 raw RGB frames = 903 kB per
request) with ``execute_steps 1``, so every Step runs a forward pass. Three setups, same process:

* one client, ``batch_max_size 1``: the latency of one Step;
* 8 concurrent clients, ``batch_max_size 1`` (**baseline**): every Step its own forward pass;
* 8 concurrent clients, ``batch_max_size 8``: the clients' observations share one forward pass.

ratio = batched throughput / unbatched throughput with 8 clients (Steps/s; higher is better). On a CPU
with few cores the per-request work outside the model (protobuf decoding, resizing checks, gRPC) is a
large share, so the ratio is modest there; on a GPU the forward pass batches almost for free.

    uv run python benchmarks/serve_latency.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CAMERAS = (
    "scene_right_0",
    "scene_left_0",
    "wrist_left_minus",
    "wrist_left_plus",
    "wrist_right_minus",
    "wrist_right_plus",
)
SIZE = 224
CLIENTS = 8


def _export(tmp: Path, device: str) -> Any:
    """A tiny VLA export with LBM's six cameras at 224x224 and a 20-D flat proprio/action."""
    import foundry_action.plugin
    from foundry_action.normalization import NormStats
    from foundry_action.policy import Policy
    from foundry_action.store import EpisodeWriter, open_store
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.export import export_model
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import BuildContext, collect

    store = tmp / "bench.zarr"
    rng = np.random.default_rng(0)
    with EpisodeWriter(
        store,
        fps=10.0,
        fields={"action": (20,), "proprio": (20,)},
        cameras={c: (SIZE, SIZE) for c in CAMERAS},
        mode="w",
    ) as writer:
        episode = {
            "action": rng.normal(size=(12, 20)).astype(np.float32),
            "proprio": rng.normal(size=(12, 20)).astype(np.float32),
        }
        for cam in CAMERAS:
            episode[f"camera/{cam}"] = rng.integers(0, 255, (12, SIZE, SIZE, 3), dtype=np.uint8)
        writer.append_episode(
            episode, task="bench", instruction="put the box on the shelf", success=True, source="bench"
        )
    NormStats.compute(open_store(store)).save(store / "stats")
    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(pm)
    registry = collect(pm)
    node = {
        "name": "vla",
        "backbone": {"name": "tiny_test", "width": 32},
        "expert": {"name": "flow_matching", "preset": "debug", "inference_steps": 4},
        "data": {"name": "zarr_episodes", "path": str(store), "past": 1, "future": 7, "image_offsets": [0]},
    }
    torch.manual_seed(0)
    out = export_model(registry.build("model", node, BuildContext(registry)), node, tmp / "export")
    return functools.partial(Policy.from_pretrained, str(out), registry=registry, device=device)


def _observation(seed: int) -> Any:
    from foundry_eval.serving import lbm_policy_pb2 as lbm

    rng = np.random.default_rng(seed)
    msg = lbm.MultiarmObservation(
        version=20241212, use_language_instruction=True, language_instruction="put the box on the shelf"
    )
    for state in (msg.robot.actual, msg.robot.desired):
        for arm, y in (("right::panda", -0.2), ("left::panda", 0.2)):
            status = state.pose_status.add(robot_name=arm)
            status.pose.translation.extend([0.4, y, 0.3])
            status.pose.rotation.extend(np.eye(3).reshape(-1).tolist())
            state.gripper_status.add(gripper_name=arm + "_hand", gripper_position=0.04)
    for cam in CAMERAS:
        image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        entry = msg.visuo.add(camera_serial=cam, has_rgb=True)
        entry.camera_rgb.image.CopyFrom(lbm.Image(height=SIZE, width=SIZE, channels=3, data=image.tobytes()))
    return msg


def _drive(address: str, clients: int, steps: int) -> dict[str, float]:
    """``clients`` threads, each: reset then ``steps`` timed Steps (after 2 warm-up Steps)."""
    import grpc

    from foundry_eval.serving import lbm_policy_pb2 as lbm
    from foundry_eval.serving import lbm_policy_pb2_grpc as lbm_grpc
    from foundry_eval.serving.server import GRPC_OPTIONS

    channels = [grpc.insecure_channel(address, options=GRPC_OPTIONS) for _ in range(clients)]
    observations = [_observation(c) for c in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        step = lbm_grpc.PolicyStepServiceStub(channels[c])
        reset = lbm_grpc.PolicyResetServiceStub(channels[c])
        request = lbm.PolicyStepRequest(client_identifier=f"bench-{c}", observation=observations[c])
        assert reset.PolicyReset(
            lbm.PolicyResetRequest(client_identifier=f"bench-{c}", seed=c), wait_for_ready=True
        ).success
        for _ in range(2):
            assert step.PolicyStep(request).success
        barrier.wait()
        for _ in range(steps):
            start = time.perf_counter()
            assert step.PolicyStep(request).success
            latencies[c].append((time.perf_counter() - start) * 1000.0)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for ch in channels:
        ch.close()
    lat = np.concatenate([np.asarray(x) for x in latencies])
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "steps_per_s": clients * steps / wall,
        "steps": int(clients * steps),
    }


def _serve(factory: Any, clients: int, batch: int, steps: int, device: str) -> dict[str, float]:
    from foundry_eval.serving.lbm_server import start_lbm_server

    server = start_lbm_server(
        "bench",
        port=0,
        policy_factory=factory,
        device=device,
        execute_steps=1,
        batch_max_size=batch,
        batch_timeout_s=0.05,
    )
    try:
        result = _drive(server.address, clients, steps)
        result["mean_batch"] = server.batcher.mean_batch_size
        return result
    finally:
        server.stop(0)


def run(quick: bool, device: str = "cpu", threads: int = 2) -> dict[str, Any]:
    import logging

    logging.getLogger("foundry_eval.serving").setLevel(logging.WARNING)
    torch.set_num_threads(threads)
    steps = 10 if quick else 40
    with tempfile.TemporaryDirectory() as tmp:
        factory = _export(Path(tmp), device)
        single = _serve(factory, 1, 1, steps * 2, device)
        unbatched = _serve(factory, CLIENTS, 1, steps, device)
        batched = _serve(factory, CLIENTS, CLIENTS, steps, device)
    return {
        "name": "serve_latency",
        "metric": f"LBM Steps/s with {CLIENTS} clients: batch {CLIENTS} / batch 1",
        "higher_is_better": True,
        "unit": "Steps/s",
        "device": device,
        "baseline": unbatched["steps_per_s"],
        "ours": batched["steps_per_s"],
        "ratio": batched["steps_per_s"] / unbatched["steps_per_s"],
        "single_client": single,
        "unbatched": unbatched,
        "batched": batched,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 timed Steps per client instead of 40")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the server")
    args = parser.parse_args()
    r = run(args.quick, args.device, args.threads)
    print(f"LBM PolicyStep, 6 cameras x {SIZE}x{SIZE}, tiny VLA on {r['device']}")
    print(f"{'setup':<28}{'p50 ms':>9}{'p99 ms':>9}{'Steps/s':>10}{'mean batch':>12}")
    for label, key in (
        ("1 client, batch 1", "single_client"),
        (f"{CLIENTS} clients, batch 1", "unbatched"),
        (f"{CLIENTS} clients, batch {CLIENTS}", "batched"),
    ):
        m = r[key]
        print(
            f"{label:<28}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}{m['steps_per_s']:>10.1f}{m['mean_batch']:>12.2f}"
        )
    print(f"throughput ratio batch {CLIENTS} / batch 1 ({CLIENTS} clients): {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
