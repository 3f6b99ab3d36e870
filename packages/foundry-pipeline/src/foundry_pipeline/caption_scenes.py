"""Captioned tabletop scenes whose objects, colours and positions vary: what teaches the VLM to look.

The task scenes alone cannot: every task has fixed objects in fixed colours, so a caption's colour
words follow from the task, and a VLM can lower its loss with templates while ignoring the pixels
(measured: four different renders, one identical generated caption). Here one Drake scene holds a
palette of objects (every shape in every colour); each image puts 1–3 of them, of distinct colours, on
the table, each in its own cell of the 3×3 grid the position words name, at least ``MARGIN`` from a cell border so every
word is unambiguous, and hides the others under the table top. The caption names every object on the
table with its colour, shape and position, in a fixed order (palette order), so a caption is a
function of the image alone. (The scene camera faces the robot: the table's left, +y, is the image's
right, and its far side, +x, the image's bottom; the words are in the table's frame, like the tasks'.)

Test: ``uv run pytest packages/foundry-pipeline/tests/test_pipeline_grounding.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from foundry_pipeline.language import SceneObject, caption_scene

#: Caption colours and their RGB (a subset of the world's colour words, chosen to stand out from the
#: brown table and from each other at 64 px).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.95, 0.8, 0.1),
    "white": (0.95, 0.95, 0.95),
}
#: Shape word -> (scene object kind, size); the words are those of the task scenes' captions.
SHAPES: dict[str, tuple[str, tuple[float, ...]]] = {
    "block": ("box", (0.04, 0.04, 0.04)),
    "can": ("cylinder", (0.025, 0.06)),
    "target circle": ("marker", (0.035,)),
}
#: Cell borders of the position words (``language.region``: ±0.08 m) and the table area used.
BORDER = 0.08
EDGE = 0.22
MARGIN = 0.02
_HIDDEN_Z = -0.5  # under the 5 cm table top: no camera sees it


def _cell_ranges() -> list[tuple[float, float]]:
    """The usable interval of each of the three cells along one table axis (low, middle, high)."""
    return [(-EDGE, -BORDER - MARGIN), (-BORDER + MARGIN, BORDER - MARGIN), (BORDER + MARGIN, EDGE)]


@dataclass(frozen=True)
class PlacedObject:
    color: str
    shape: str
    x: float
    y: float

    def scene_object(self) -> SceneObject:
        return SceneObject(f"{self.color}_{self.shape}", self.color, self.shape, self.x, self.y)


def sample_layout(rng: np.random.Generator, max_objects: int = 3) -> list[PlacedObject]:
    """1..max_objects objects of distinct colours (a colour names one object), each of a random shape
    and in its own cell, listed in palette order."""
    n = int(rng.integers(1, max_objects + 1))
    colors = sorted(rng.choice(len(PALETTE), size=n, replace=False).tolist())
    cells = rng.choice(9, size=n, replace=False)
    ranges = _cell_ranges()
    shapes = list(SHAPES)
    placed = []
    for c, cell in zip(colors, cells):
        (xlo, xhi), (ylo, yhi) = ranges[int(cell) // 3], ranges[int(cell) % 3]
        shape = shapes[int(rng.integers(len(shapes)))]
        placed.append(
            PlacedObject(list(PALETTE)[c], shape, float(rng.uniform(xlo, xhi)), float(rng.uniform(ylo, yhi)))
        )
    return placed


def caption_layout(objects: list[PlacedObject]) -> str:
    """Every object with its colour, shape and position words, in the layout's (palette) order."""
    return caption_scene([o.scene_object() for o in objects])


class CaptionScene:
    """One Drake tabletop scene with the whole palette; ``render(layout, seed)`` draws one image."""

    def __init__(self, image_size: int) -> None:
        from foundry_eval.sim.scene import ObjectSpec, TabletopScene

        specs = [
            ObjectSpec(f"{c}_{s}", kind, size, 0.1, (*rgb, 1.0))
            for c, rgb in PALETTE.items()
            for s, (kind, size) in SHAPES.items()
        ]
        self._heights = {
            f"{c}_{s}": _rest_height(kind, size) for c in PALETTE for s, (kind, size) in SHAPES.items()
        }
        self.image_size = image_size
        self.scene = TabletopScene(specs, cameras=["scene"], image_size=image_size)

    def render(self, layout: list[PlacedObject], rng: np.random.Generator) -> np.ndarray:
        """The scene camera's RGB image [H, W, 3] of ``layout`` (gripper above the table, as in the tasks)."""
        from foundry_eval.sim.scene import MAX_OPENING, table_pose

        placed = {f"{o.color}_{o.shape}": o for o in layout}
        poses: dict[str, Any] = {}
        for i, name in enumerate(self._heights):
            o = placed.get(name)
            if o is None:
                poses[name] = table_pose(0.1 * (i % 4) - 0.15, 0.1 * (i // 4) - 0.15, _HIDDEN_Z)
            else:
                poses[name] = table_pose(o.x, o.y, self._heights[name], float(rng.uniform(-np.pi, np.pi)))
        gripper = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.2, 0.25)])
        self.scene.reset(gripper, float(rng.uniform(-0.4, 0.4)), MAX_OPENING, poses)
        return self.scene.render()["scene"]

    def close(self) -> None:
        self.scene = None  # type: ignore[assignment]


def _rest_height(kind: str, size: tuple[float, ...]) -> float:
    """Height of the body origin of an object resting on the table."""
    if kind == "box":
        return size[2] / 2 + 0.0005
    if kind == "cylinder":
        return size[1] / 2 + 0.0005
    return 0.001  # marker: a flat disk on the table
