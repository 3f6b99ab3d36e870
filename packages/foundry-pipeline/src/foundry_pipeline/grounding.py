"""Does the VLM look? Attribute accuracy of its generated captions on held-out caption scenes.

Each held-out image (``caption_scenes``, seeds never used for training) has 1–3 objects of distinct
colours. A generated caption is read as a list of mentions (a colour word, the shape after it, the first
position phrase after that). Per image, every object on the table has two attributes, its colour
(mentioned at all) and its position (the phrase of that colour's mention is the right cell), and every
mentioned colour that is not on the table is a hallucination that counts as two wrong attributes:

    accuracy = correct attributes / (2 × objects + 2 × hallucinated mentions)

The same score is computed for two answers that cannot see the image: **chance** (a caption of a random
layout from the training distribution; mean over 20 draws per image) and the **text-only LLM** (the
pipeline's LLM, greedy from BOS: what it says about a table it has not seen). A VLM that ignores the
pixels scores like them. Test: ``uv run pytest packages/foundry-pipeline/tests/test_pipeline_grounding.py``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundry_pipeline.caption_scenes import PALETTE, SHAPES, PlacedObject, caption_layout, sample_layout
from foundry_pipeline.language import SceneObject, region

#: Every position phrase ``language.region`` writes.
REGIONS: tuple[str, ...] = tuple(
    sorted(
        {region(SceneObject("o", "c", "s", x, y)) for x in (-0.2, 0.0, 0.2) for y in (-0.2, 0.0, 0.2)},
        key=len,
        reverse=True,
    )
)
#: The text-only LLM continues this (a sentence start of its corpus) to say what it expects on the table.
TEXT_ONLY_PROMPT = "There is a"
_COLOR_RE = re.compile(r"\b(" + "|".join(PALETTE) + r")\b")


@dataclass(frozen=True)
class Mention:
    color: str
    shape: str | None
    region: str | None


def parse_caption(text: str) -> list[Mention]:
    """The colour mentions of a caption, each with the shape right after it and its position phrase."""
    text = text.lower()
    hits = list(_COLOR_RE.finditer(text))
    mentions = []
    for i, hit in enumerate(hits):
        end = hits[i + 1].start() if i + 1 < len(hits) else len(text)
        span = text[hit.end() : end]
        shape = next((s for s in SHAPES if span.lstrip().startswith(s)), None)
        found = [(span.find(r), r) for r in REGIONS if r in span]
        mentions.append(Mention(hit.group(1), shape, min(found)[1] if found else None))
    return mentions


@dataclass
class Score:
    correct: int = 0
    total: int = 0
    color_correct: int = 0
    position_correct: int = 0
    shape_correct: int = 0
    objects: int = 0
    hallucinated: int = 0

    def add(self, other: Score) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)

    def as_dict(self) -> dict[str, Any]:
        n = max(self.objects, 1)
        return {
            "accuracy": self.accuracy,
            "color_recall": self.color_correct / n,
            "position_accuracy": self.position_correct / n,
            "shape_accuracy": self.shape_correct / n,
            "hallucinated_per_image_object": self.hallucinated / n,
            "objects": self.objects,
        }


def score_caption(text: str, truth: Sequence[PlacedObject]) -> Score:
    """Attribute score of one caption against the objects on the table (see the module docstring)."""
    by_color: dict[str, Mention] = {}
    for m in parse_caption(text):
        by_color.setdefault(m.color, m)  # a repeated colour: its first mention counts
    true_colors = {o.color for o in truth}
    s = Score(objects=len(truth))
    for o in truth:
        m = by_color.get(o.color)
        if m is None:
            continue
        s.color_correct += 1
        s.position_correct += m.region == region(o.scene_object())
        s.shape_correct += m.shape == o.shape
    s.hallucinated = sum(1 for c in by_color if c not in true_colors)
    s.correct = s.color_correct + s.position_correct
    s.total = 2 * (len(truth) + s.hallucinated)
    return s


def chance_score(truths: Sequence[Sequence[PlacedObject]], *, draws: int = 20, seed: int = 0) -> Score:
    """The score of captions of random layouts from the training distribution (they ignore the image)."""
    rng = np.random.default_rng(seed)
    total = Score()
    for truth in truths:
        for _ in range(draws):
            total.add(score_caption(caption_layout(sample_layout(rng)), truth))
    return total


@dataclass
class HeldOut:
    """Held-out caption scenes read back from ``world/captions_heldout``."""

    keys: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    layouts: list[list[PlacedObject]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


def read_heldout(folder: Path) -> HeldOut:
    from PIL import Image

    from foundry_core.data.shards import iter_shard_samples, read_manifest

    held = HeldOut()
    for shard in read_manifest(str(folder)):
        for key, members in iter_shard_samples(shard.url):
            held.keys.append(key)
            held.images.append(np.array(Image.open(io.BytesIO(members["png"])).convert("RGB")))
            held.layouts.append([PlacedObject(**o) for o in json.loads(members["json"])["objects"]])
            held.captions.append(members["txt"].decode())
    return held


def evaluate_grounding(
    held: HeldOut, caption: Callable[[np.ndarray], str], text_only: str | None = None, examples: int = 6
) -> dict[str, Any]:
    """Score ``caption(image)`` on every held-out image, beside chance and the text-only answer."""
    vlm, blind = Score(), Score()
    samples = []
    outputs = []
    for i, (image, truth) in enumerate(zip(held.images, held.layouts)):
        text = caption(image)
        outputs.append(text)
        vlm.add(score_caption(text, truth))
        if text_only is not None:
            blind.add(score_caption(text_only, truth))
        if i < examples:
            samples.append(
                {"index": i, "key": held.keys[i], "generated": text, "reference": held.captions[i]}
            )
    result: dict[str, Any] = {
        "images": len(held.images),
        "vlm": vlm.as_dict(),
        "chance": chance_score(held.layouts).as_dict(),
        "distinct_captions": len(set(outputs)),
        "samples": samples,
    }
    if text_only is not None:
        result["text_only_llm"] = {**blind.as_dict(), "text": text_only}
    return result


def pipeline_grounding(out: Path, *, max_new_tokens: int = 48) -> tuple[dict[str, Any], HeldOut]:
    """The grounding metric of a pipeline folder: its VLM export on ``world/captions_heldout``, and its
    LLM export (text only) for comparison; also the held-out set (for pictures of the samples)."""
    import torch

    from foundry_core.export import load_pretrained

    held = read_heldout(out / "world" / "captions_heldout")
    vlm = load_pretrained(out / "vlm" / "export").eval()

    def caption(image: np.ndarray) -> str:
        images = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None, None].contiguous()
        return vlm.generate(images, [""], max_new_tokens=max_new_tokens)[0]

    llm = load_pretrained(out / "llm" / "export").eval()
    tok = llm.tokenizer
    start = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + tok(
        TEXT_ONLY_PROMPT, add_special_tokens=False
    )["input_ids"]
    with torch.no_grad():
        ids = llm.generate(torch.tensor([start]), max_new_tokens)
    text_only = TEXT_ONLY_PROMPT + tok.decode(ids[0, len(start) :].tolist(), skip_special_tokens=True)
    text_only = text_only.split(".")[0] + "."  # one sentence about the table, like a caption
    return evaluate_grounding(held, caption, text_only), held
