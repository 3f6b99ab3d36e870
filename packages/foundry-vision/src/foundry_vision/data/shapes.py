"""Rendered image-caption data ("a red circle on a gray background"): no files, runs from a fresh clone.

* ``synthetic_image_caption`` data source: renders samples on the fly, deterministic per index,
  global cursor like ``wds_image_caption`` (exact resume on any world size). Used by
  ``recipes/vlm_debug.yaml``: the captions are learnable, so the loss visibly goes down in minutes.
* :func:`write_image_caption_shards` writes the same samples as real WebDataset shards + manifest
  (PNG + TXT + img2dataset-style JSON), the reference format, for tests and benchmarks.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_image_caption.py``.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40), "white": (245, 245, 245)}
BACKGROUNDS = {"gray": (110, 110, 110), "black": (15, 15, 15)}
SHAPES = ("square", "circle", "triangle")


def render_sample(index: int, size: int = 64) -> tuple[Any, str]:
    """The ``index``-th sample: a PIL image and its caption (same index, same sample, always)."""
    from PIL import Image, ImageDraw

    rng = random.Random(index)
    color, shape, bg = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))
    img = Image.new("RGB", (size, size), BACKGROUNDS[bg])
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.2, 0.35) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    elif shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[color])
    return img, f"a {color} {shape} on a {bg} background"


def write_image_caption_shards(out_dir: str | Path, num_samples: int, per_shard: int = 16, size: int = 64) -> Path:
    """Write ``num_samples`` rendered samples as WebDataset shards + ``manifest.jsonl``; return ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for s, start in enumerate(range(0, num_samples, per_shard)):
        name = f"shard-{s:04d}"
        count = min(per_shard, num_samples - start)
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            for i in range(start, start + count):
                img, caption = render_sample(i, size)
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                key = f"{i:09d}"
                meta = {"key": key, "caption": caption, "status": "success", "width": size, "height": size}
                for ext, data in (("png", buf.getvalue()), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        lines.append(json.dumps({"shard": name, "num_sequences": count}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out


class SyntheticImageCaption:
    """``synthetic_image_caption``: rendered shapes with captions; see the module docstring."""

    modality = "image_caption"

    @dataclass(kw_only=True)
    class Config:
        num_samples: int = 512
        image_size: int = 64
        prompt: str = ""

        def validate(self) -> None:
            if self.num_samples < 1 or self.image_size < 8:
                raise ConfigError("num_samples must be >= 1 and image_size >= 8")

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._cursor = 0

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> SyntheticImageCaption:
        return cls(cfg)

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self._cursor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._cursor = int(state["cursor"])

    def batches(self, batch_size: int, *, rank: int, world_size: int, seed: int) -> Iterator[dict[str, Any]]:
        n = self.cfg.num_samples
        while True:
            images, captions, keys = [], [], []
            for i in range(batch_size):
                pos = self._cursor + i * world_size + rank
                epoch, within = divmod(pos, n)
                order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
                index = int(order[within])
                img, caption = render_sample(index, self.cfg.image_size)
                arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
                images.append(arr.permute(2, 0, 1))
                captions.append(caption)
                keys.append(f"{index:09d}")
            self._cursor += batch_size * world_size
            yield {"modality": self.modality, "images": torch.stack(images)[:, None], "captions": captions,
                   "prompts": [self.cfg.prompt] * batch_size, "keys": keys}
