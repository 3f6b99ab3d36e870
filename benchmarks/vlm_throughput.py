"""VLM throughput on CPU: a small composed VLM's training step vs the image-caption loader alone.

Model step: ``vlm`` = ViT (64 px, patch 8, width 64, 2 blocks) -> MLP projector with pixel shuffle 2
(16 image tokens) -> transformer (dim 128, 2 layers, byte tokenizer), forward + backward + AdamW on
rendered image-caption batches of 16. Loader: ``wds_image_caption`` over the reference's real
image-caption shards (``../shared/data/vla_foundry/tiny_dataset/image_caption``, ~500 px WebP) when
present, else rendered 256 px PNG shards written to a temp dir; decode + random resized crop + color
jitter to 64 px, 2 decode threads.

Baseline = model step samples/s; ours = loader samples/s, both measured here.
ratio = loader / model (higher is better; >= 1 means the loader is not the bottleneck).

    uv run python benchmarks/vlm_throughput.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

MODEL = {
    "name": "vlm",
    "llm": {"name": "transformer", "dim": 128, "n_layers": 2, "n_heads": 4, "max_seq_len": 256, "tokenizer": "byte"},
    "encoder": {"name": "vit", "image_size": 64, "patch_size": 8, "width": 64, "depth": 2, "heads": 2},
    "projector": {"kind": "mlp", "pixel_shuffle": 2},
}
BATCH = 16


def _registry() -> Any:
    import foundry_vision.plugin
    from foundry_core.plugins import make_plugin_manager
    from foundry_core.registry import collect

    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_vision.plugin, name="foundry-vision")
    return collect(pm)


def _shards(tmp: str) -> tuple[str, str]:
    from foundry_core.testing.paths import shared_data_dir

    shared = shared_data_dir()
    if shared is not None and (shared / "vla_foundry/tiny_dataset/image_caption/manifest.jsonl").is_file():
        return str(shared / "vla_foundry/tiny_dataset/image_caption"), "reference shards (WebP ~500 px)"
    from foundry_vision.data.shapes import write_image_caption_shards

    return str(write_image_caption_shards(Path(tmp) / "shards", 128, per_shard=16, size=256)), "rendered shards (PNG 256 px)"


def measure_model(registry: Any, steps: int) -> float:
    from foundry_core.registry import BuildContext
    from foundry_vision.data.shapes import SyntheticImageCaption

    torch.manual_seed(0)
    model = registry.build("model", MODEL, BuildContext(registry))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = SyntheticImageCaption(SyntheticImageCaption.Config(num_samples=256, image_size=64)).batches(BATCH, rank=0, world_size=1, seed=0)
    data = [next(batches) for _ in range(steps + 2)]

    def step(batch: dict[str, Any]) -> None:
        loss, _ = model.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in data[:2]:  # warm-up
        step(b)
    t = time.perf_counter()
    for b in data[2:]:
        step(b)
    return steps * BATCH / (time.perf_counter() - t)


def measure_loader(registry: Any, path: str, batches: int) -> float:
    from foundry_core.registry import BuildContext

    src = registry.build("data_source", {"name": "wds_image_caption", "path": path, "image_size": 64, "num_workers": 2,
                                         "augment": {"random_resized_crop": [0.5, 1.0], "color_jitter": 0.3}}, BuildContext(registry))
    it = src.batches(BATCH, rank=0, world_size=1, seed=0)
    next(it)  # warm-up (thread pool, file cache)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t)


def run(quick: bool, threads: int = 1) -> dict[str, Any]:
    torch.set_num_threads(threads)
    registry = _registry()
    with tempfile.TemporaryDirectory() as tmp:
        path, what = _shards(tmp)
        model_sps = measure_model(registry, 5 if quick else 30)
        loader_sps = measure_loader(registry, path, 8 if quick else 40)
    return {
        "name": "vlm_throughput",
        "metric": "loader samples/s / VLM train-step samples/s",
        "unit": "samples/s",
        "higher_is_better": True,
        "goal": 1.0,
        "baseline": model_sps,
        "ours": loader_sps,
        "ratio": loader_sps / model_sps,
        "loader_data": what,
        "threads": threads,
        "batch": BATCH,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps/batches")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model step")
    args = parser.parse_args()
    r = run(args.quick, args.threads)
    print(f"VLM throughput on CPU ({r['threads']} torch thread(s), batch {r['batch']})")
    print(f"{'what':<48}{'samples/s':>12}")
    print(f"{'VLM train step (fwd+bwd+AdamW), baseline':<48}{r['baseline']:>12.1f}")
    print(f"{'loader: ' + r['loader_data']:<48}{r['ours']:>12.1f}")
    print(f"ratio loader/model: {r['ratio']:.2f} ({'loader is not' if r['ratio'] >= 1 else 'LOADER IS'} the bottleneck)")


if __name__ == "__main__":
    main()
