"""The pipeline's "toy world": text, captioned images and demonstrations, all from the Drake tasks.

* text: paragraphs describing sampled scenes and tasks (``language.describe_scene``), written as raw
  text WebDataset shards + ``manifest.jsonl`` (the ``text_untokenized`` format of VLA Foundry);
* images: scene-camera renders with a caption naming every object's colour, shape and position:
  the tasks' seeded initial states and caption scenes (``caption_scenes``: random objects, colours and
  positions, which the task scenes alone do not vary), as image-caption shards (``<key>.png`` +
  ``<key>.txt``) + manifest; held-out caption scenes (+ ``<key>.json``, the layout) in
  ``captions_heldout/`` for the grounding metric (``grounding``);
* demonstrations: scripted-expert episodes in the Zarr episode store (foundry-action).

Text layouts are sampled from each task's own initial-state distribution (no simulation needed),
so the corpus is large and cheap; images need a reset + render per sample.
Tests: ``packages/foundry-pipeline/tests/test_pipeline_smoke.py`` (end to end) and ``test_pipeline_language.py``.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from foundry_core.errors import ConfigError
from foundry_eval.sim.demos import RECOVERY_SEED_START, ActionNoise
from foundry_pipeline.language import SceneObject, caption_scene, describe_scene

#: Shape words for the scene builder's object kinds.
SHAPES = {"box": "block", "cylinder": "can", "bin": "bin", "plate": "plate", "marker": "target circle"}
COLORS = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.95, 0.8, 0.1),
    "white": (0.95, 0.95, 0.95),
    "black": (0.1, 0.1, 0.1),
    "orange": (0.95, 0.5, 0.1),
}


@dataclass(kw_only=True)
class WorldConfig:
    """What the toy world contains (the defaults are the CPU-sized main job)."""

    tasks: list[str] = field(default_factory=lambda: ["push_to_target", "pick_place_bin", "stack_blocks", "put_on_plate"])
    #: Text paragraphs per task (sampled layouts, no simulation).
    text_docs_per_task: int = 1500
    #: Rendered + captioned initial scenes per task.
    images_per_task: int = 60
    #: Captioned caption scenes (random objects, colours, positions) for VLM training.
    caption_scenes: int = 600
    #: Caption scenes from their own seeds for the grounding metric (never trained on).
    heldout_scenes: int = 100
    #: Expert demonstrations stored per task (successful ones).
    demos_per_task: int = 20
    #: Per-task overrides of ``demos_per_task`` (e.g. more of a short task).
    demo_counts: dict[str, int] = field(default_factory=dict)
    #: Tasks that get demonstrations (default: all of ``tasks``).
    demo_tasks: list[str] | None = None
    #: Per-task settings of the task component, used for the text, images, demos and evaluation alike
    #: (e.g. ``{reach_target: {distractor: true}}``).
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_size: int = 64
    cameras: list[str] = field(default_factory=lambda: ["scene", "wrist"])
    samples_per_shard: int = 256
    workers: int = 2
    seed: int = 0
    #: How the demo store keeps camera frames: lossless or jpeg (see docs/formats.md).
    frames: str = "lossless"
    #: JPEG quality 1..100 with ``frames: jpeg`` (default 90).
    jpeg_quality: int | None = None
    #: Recovery demonstrations (DART) per demo task, stored after the clean ones: the env runs the
    #: expert's action perturbed by ``recovery_noise``, the label is the clean action (0 = none).
    recovery_demos_per_task: int = 0
    #: The perturbation of recovery demos: xyz (m), yaw (rad), correlation, seed (``ActionNoise``).
    recovery_noise: ActionNoise = field(default_factory=ActionNoise)

    def validate(self) -> None:
        from foundry_action.frame_codecs import FrameEncoding

        if self.recovery_demos_per_task < 0:
            raise ConfigError(f"world.recovery_demos_per_task: must be >= 0, got {self.recovery_demos_per_task}")
        self.recovery_noise.check(lambda f: f"world.recovery_noise.{f}")
        if self.recovery_demos_per_task and not self.recovery_noise.active:
            raise ConfigError(
                "world.recovery_noise: recovery demos need noise (xyz or yaw > 0); "
                "without it they would repeat the clean demonstrations"
            )

        FrameEncoding.parse(self.frames, self.jpeg_quality, where="world.frames/world.jpeg_quality")
        demo_tasks = self.demo_tasks or self.tasks
        for task, n in self.demo_counts.items():
            if task not in demo_tasks:
                raise ConfigError(f"world.demo_counts: {task!r} is not one of the demo tasks {demo_tasks}")
            if n < 1:
                raise ConfigError(f"world.demo_counts.{task}: must be >= 1, got {n}")
        for task, options in self.task_options.items():
            if task not in self.tasks:
                raise ConfigError(f"world.task_options: {task!r} is not one of the world's tasks {self.tasks}")
            reserved = sorted({"name", "cameras", "image_size"} & set(options))
            if reserved:
                raise ConfigError(f"world.task_options.{task}: {reserved} are set by the world (world.cameras, world.image_size)")

    def task_node(self, task: str, cameras: list[str] | None = None) -> dict[str, Any]:
        """The task component node of ``task`` in this world (its options, the world's cameras and size)."""
        cams = list(self.cameras) if cameras is None else cameras
        return {"name": task, **self.task_options.get(task, {}), "cameras": cams, "image_size": self.image_size}


def color_name(rgba: Iterable[float]) -> str:
    """The nearest colour word for an RGB(A) value."""
    rgb = np.asarray(list(rgba)[:3], dtype=float)
    return min(COLORS, key=lambda name: float(np.sum((np.asarray(COLORS[name]) - rgb) ** 2)))


def scene_objects(env: Any, poses: dict[str, Any]) -> list[SceneObject]:
    """SceneObjects (colour, shape, position) for a task env and a dict of object poses."""
    objects = []
    for spec in env.object_specs():
        xyz = np.asarray(poses[spec.name].translation(), dtype=float)
        objects.append(SceneObject(spec.name, color_name(spec.color), SHAPES.get(spec.kind, spec.kind), *xyz))
    return objects


class ShardWriter:
    """Writes WebDataset tar shards (``shard_%06d.tar``) and a ``manifest.jsonl`` with exact counts."""

    def __init__(self, out_dir: Path, samples_per_shard: int) -> None:
        self.out_dir, self.per_shard = Path(out_dir), samples_per_shard
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[tuple[str, int]] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self._tar is None or self._count >= self.per_shard:
            self._close_shard()
            name = f"shard_{len(self.shards):06d}"
            self.shards.append((name, 0))
            self._tar = tarfile.open(self.out_dir / f"{name}.tar", "w")
            self._count = 0
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self.shards[-1] = (self.shards[-1][0], self._count)

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def close(self) -> Path:
        self._close_shard()
        manifest = self.out_dir / "manifest.jsonl"
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"shard": n, "num_sequences": c}) + "\n" for n, c in self.shards))
        tmp.replace(manifest)  # the manifest appears only once every shard is complete
        return manifest


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG file bytes (shards and the report)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def build_text(cfg: WorldConfig, out_dir: Path, *, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write the text corpus; returns counts."""
    from foundry_core.plugins import get_registry

    rng = random.Random(cfg.seed)
    docs: list[tuple[str, str]] = []
    for t, task in enumerate(cfg.tasks):
        env = get_registry().build("task", cfg.task_node(task, []), where=f"world.tasks.{task}")
        nprng = np.random.default_rng(cfg.seed * 1000 + t)
        for i in range(cfg.text_docs_per_task):
            poses = env.sample_objects(nprng)
            instruction = env.sample_instruction(nprng)
            docs.append((f"{task}_{i:06d}", describe_scene(scene_objects(env, poses), instruction, rng)))
            if progress:
                progress(1)
        env.close()
    # Shards are read one after another, so each shard must hold every task's text: a shard per task
    # made the LLM's loss jump at every shard boundary (a distribution shift, not learning).
    rng.shuffle(docs)
    writer = ShardWriter(out_dir, cfg.samples_per_shard * 4)
    for key, text in docs:
        writer.write(key, {"json": text.encode()})
    writer.close()
    return {"documents": len(docs), "words": sum(len(t.split()) for _, t in docs)}


def build_captions(cfg: WorldConfig, out_dir: Path, *, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Captioned images for the VLM: renders of the tasks' initial scenes and caption scenes (random
    objects, colours and positions: ``caption_scenes``), shuffled together; plus ``heldout_scenes`` caption
    scenes from their own seeds in ``<out_dir>_heldout`` for the grounding metric (``grounding``)."""
    from foundry_core.plugins import get_registry

    samples: list[tuple[str, dict[str, bytes]]] = []
    for task in cfg.tasks:
        env = get_registry().build("task", cfg.task_node(task, ["scene"]), where=f"world.tasks.{task}")
        names = [s.name for s in env.object_specs()]
        for i in range(cfg.images_per_task):
            obs = env.reset(10_000 + i)
            poses = {n: env.scene.pose(n) for n in names}
            caption = caption_scene(scene_objects(env, poses))
            samples.append((f"{task}_{i:06d}", {"png": png_bytes(obs["images"]["scene"]), "txt": caption.encode()}))
            if progress:
                progress(1)
        env.close()
    trained = _caption_scenes(cfg, cfg.caption_scenes, 1, "scene", progress)
    samples += [(k, {"png": m["png"], "txt": m["txt"]}) for k, m in trained]
    heldout = _caption_scenes(cfg, cfg.heldout_scenes, 2, "heldout", progress)
    random.Random(cfg.seed + 1).shuffle(samples)  # every shard mixes task renders and caption scenes
    writer = ShardWriter(out_dir, cfg.samples_per_shard)
    for key, members in samples:
        writer.write(key, members)
    writer.close()
    held_dir = out_dir.parent / f"{out_dir.name}_heldout"
    writer = ShardWriter(held_dir, cfg.samples_per_shard)
    for key, members in heldout:
        writer.write(key, members)
    writer.close()
    examples = [{"key": k, "caption": m["txt"].decode()} for k, m in samples[:4]]
    return {"images": len(samples), "heldout": len(heldout), "heldout_dir": str(held_dir), "examples": examples}


def _caption_scenes(
    cfg: WorldConfig, n: int, stream: int, prefix: str, progress: Callable[[int], None] | None
) -> list[tuple[str, dict[str, bytes]]]:
    """``n`` captioned caption scenes of seed stream ``stream``, rendered by ``cfg.workers`` processes."""
    jobs = [(cfg.image_size, cfg.seed, stream, prefix, list(range(i, min(i + 50, n)))) for i in range(0, n, 50)]
    out: list[tuple[str, dict[str, bytes]]] = []

    def collect(results: Iterable[list[tuple[str, dict[str, bytes]]]]) -> None:
        for chunk in results:  # in job order: the output does not depend on the number of workers
            out.extend(chunk)
            if progress:
                progress(len(chunk))

    if cfg.workers == 1 or len(jobs) <= 1:
        collect(map(_render_caption_scenes, jobs))
    else:
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            collect(pool.map(_render_caption_scenes, jobs))
    return out


_CAPTION_SCENE: Any = None


def _render_caption_scenes(job: tuple[int, int, int, str, list[int]]) -> list[tuple[str, dict[str, bytes]]]:
    """Render and caption caption scenes ``indices`` (one Drake scene per process, built once); each
    image's layout comes from its own seed ``[seed, stream, index]``, so any split gives the same images."""
    global _CAPTION_SCENE
    from foundry_pipeline.caption_scenes import CaptionScene, caption_layout, sample_layout

    image_size, seed, stream, prefix, indices = job
    if _CAPTION_SCENE is None or _CAPTION_SCENE.image_size != image_size:
        _CAPTION_SCENE = CaptionScene(image_size)
    out = []
    for i in indices:
        rng = np.random.default_rng([seed, stream, i])
        layout = sample_layout(rng)
        image = _CAPTION_SCENE.render(layout, rng)
        meta = {"objects": [o.__dict__ for o in layout]}
        members = {"png": png_bytes(image), "txt": caption_layout(layout).encode(), "json": json.dumps(meta).encode()}
        out.append((f"{prefix}_{i:06d}", members))
    return out


def build_demos(
    cfg: WorldConfig, out_path: Path, *, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Scripted-expert demonstrations of every demo task into one Zarr episode store."""
    from foundry_action.frame_codecs import FrameEncoding
    from foundry_eval.sim.demos import generate_demos

    summary: dict[str, Any] = {}
    frames = FrameEncoding.parse(cfg.frames, cfg.jpeg_quality, where="world.frames/world.jpeg_quality")
    for i, task in enumerate(cfg.demo_tasks or cfg.tasks):
        node = cfg.task_node(task)
        result = generate_demos(
            node,
            episodes=cfg.demo_counts.get(task, cfg.demos_per_task),
            out=out_path,
            workers=cfg.workers,
            append=i > 0,
            frames=frames,
            on_episode=(lambda _r, _s: progress(1)) if progress else None,
        )
        summary[task] = {"stored": result.stored, "attempted": result.attempted, "success_rate": result.success_rate}
        if cfg.recovery_demos_per_task:
            recovery = generate_demos(
                node,
                episodes=cfg.recovery_demos_per_task,
                out=out_path,
                workers=cfg.workers,
                seed_start=RECOVERY_SEED_START,
                append=True,
                on_episode=(lambda _r, _s: progress(1)) if progress else None,
                noise=cfg.recovery_noise,
            )
            summary[task]["recovery"] = {"stored": recovery.stored, "attempted": recovery.attempted}
    from foundry_action.normalization import NormStats
    from foundry_action.store import open_store

    store = open_store(out_path)
    NormStats.compute(store).save(store.path / "stats")  # stored beside the data, copied into exports
    return summary
