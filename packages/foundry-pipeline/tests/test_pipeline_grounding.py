"""The grounding metric: caption scenes, their captions, the parser and the attribute score."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_pipeline.caption_scenes import PALETTE, PlacedObject, caption_layout, sample_layout
from foundry_pipeline.grounding import HeldOut, chance_score, evaluate_grounding, parse_caption, score_caption

RED_BLOCK = PlacedObject("red", "block", 0.15, 0.15)  # far left
BLUE_DISK = PlacedObject("blue", "target circle", -0.15, -0.15)  # near right
WHITE_CAN = PlacedObject("white", "can", 0.0, 0.0)  # center


def test_captions_name_every_object_in_palette_order():
    assert caption_layout([RED_BLOCK, BLUE_DISK, WHITE_CAN]) == (
        "A red block at the far left, a blue target circle at the near right and a white can at the middle center."
    )
    rng = np.random.default_rng(0)
    layouts = [sample_layout(rng) for _ in range(300)]
    assert {len(lay) for lay in layouts} == {1, 2, 3}
    order = list(PALETTE)
    for lay in layouts:
        colors = [o.color for o in lay]
        assert colors == sorted(colors, key=order.index) and len(set(colors)) == len(colors)
        # every object is at least 2 cm inside its cell: its position words are unambiguous
        for o in lay:
            for v in (o.x, o.y):
                assert abs(abs(v) - 0.08) >= 0.02 - 1e-9 and abs(v) <= 0.22


def test_parser_reads_back_what_the_captions_say():
    text = caption_layout([RED_BLOCK, BLUE_DISK, WHITE_CAN])
    got = [(m.color, m.shape, m.region) for m in parse_caption(text)]
    assert got == [
        ("red", "block", "at the far left"),
        ("blue", "target circle", "at the near right"),
        ("white", "can", "at the middle center"),
    ]
    # the LLM's prose is read too: verbs between the object and its place
    assert (
        parse_caption("The yellow can sits at the middle left.")[0].region
        == "at the middle left"
    )


def test_score_counts_colours_positions_and_hallucinations():
    truth = [RED_BLOCK, BLUE_DISK]
    assert score_caption(caption_layout(truth), truth).accuracy == 1.0
    wrong_place = "A red block at the middle center and a blue target circle at the near right."
    s = score_caption(wrong_place, truth)
    assert (s.correct, s.total, s.position_correct) == (3, 4, 1)
    one_missing_one_invented = (
        "A red block at the far left and a green can at the far center."
    )
    s = score_caption(one_missing_one_invented, truth)
    assert (s.correct, s.total, s.hallucinated) == (2, 6, 1)
    assert score_caption("", truth).accuracy == 0.0


def test_chance_is_far_below_the_goal():
    rng = np.random.default_rng(1)
    truths = [sample_layout(rng) for _ in range(100)]
    chance = chance_score(truths).accuracy
    assert 0.1 < chance < 0.35  # a blind caption gets some colours right, rarely a place


def test_evaluate_grounding_separates_a_looking_captioner_from_a_blind_one():
    rng = np.random.default_rng(2)
    layouts = [sample_layout(rng) for _ in range(30)]
    held = HeldOut(
        keys=[f"k{i}" for i in range(30)],
        images=[np.full((8, 8, 3), i, np.uint8) for i in range(30)],
        layouts=layouts,
        captions=[caption_layout(lay) for lay in layouts],
    )
    oracle = evaluate_grounding(
        held, lambda img: held.captions[int(img[0, 0, 0])], text_only=held.captions[0]
    )
    assert oracle["vlm"]["accuracy"] == 1.0 and oracle["distinct_captions"] == len(set(held.captions))
    assert oracle["text_only_llm"]["accuracy"] < 0.5 and oracle["chance"]["accuracy"] < 0.5
    blind = evaluate_grounding(held, lambda img: held.captions[0])
    assert blind["distinct_captions"] == 1 and blind["vlm"]["accuracy"] < 0.5


@pytest.mark.parametrize("where", ["left", "right"])
def test_caption_scene_renders_the_words(where):
    """The table's left (+y) is the image's right (the scene camera faces the robot); far (+x) is down."""
    pytest.importorskip("pydrake")
    from foundry_pipeline.caption_scenes import CaptionScene

    scene = CaptionScene(64)
    y = 0.15 if where == "left" else -0.15
    image = scene.render([PlacedObject("red", "block", 0.15, y)], np.random.default_rng(0)).astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() >= 4, "the red block is not visible"
    rows, cols = np.nonzero(red)
    assert (cols.mean() > 32) == (where == "left")
    assert rows.mean() > 32  # far side of the table: bottom of the image


def test_world_caption_scenes_do_not_depend_on_the_worker_count(tmp_path):
    pytest.importorskip("pydrake")
    from foundry_core.config import parse_dataclass
    from foundry_pipeline.grounding import read_heldout
    from foundry_pipeline.world import WorldConfig, build_captions

    def build(workers, name):
        cfg = parse_dataclass(
            WorldConfig,
            {
                "tasks": ["reach_target"],
                "images_per_task": 1,
                "caption_scenes": 3,
                "heldout_scenes": 60,
                "workers": workers,
                "image_size": 32,
            },
        )
        build_captions(cfg, tmp_path / name / "captions")
        return read_heldout(tmp_path / name / "captions_heldout")

    one, two = build(1, "one"), build(2, "two")
    assert one.keys == two.keys and one.captions == two.captions and len(one.keys) == 60
    assert all(np.array_equal(a, b) for a, b in zip(one.images, two.images))
    assert len(set(one.captions)) > 40  # the layouts vary
