"""LLM -> VLM chain through the real trainer: train a debug LLM, export, start a VLM from the export
(weights really loaded), co-train it on image-caption + text (per-source losses logged), export it,
use it as a ``foundry_vlm`` backbone and caption an image with ``foundry generate``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from foundry_core.errors import ConfigError
from foundry_core.export import load_pretrained
from foundry_core.plugins import make_plugin_manager
from foundry_core.registry import BuildContext, collect
from foundry_core.testing import run_config
from foundry_core.train.run import train_from_config
from foundry_vision.data.shapes import render_sample
from foundry_vision.testing import CPU_RUN, SLOW_LR, TINY_LLM, TINY_VIT

TEXT = {"name": "wds_text_untokenized", "corpus": "pydoc_topics", "tokenizer": "byte", "seq_len": 32}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    import foundry_vision.plugin

    pm = make_plugin_manager(entry_points_enabled=False)
    pm.register(foundry_vision.plugin, name="foundry-vision")
    root = tmp_path_factory.mktemp("chain")
    llm_cfg = run_config(root / "llm", model=TINY_LLM, source=TEXT, steps=3, batch=2, run=CPU_RUN, train=SLOW_LR)
    llm_run = train_from_config(llm_cfg, pm=pm)
    vlm_node = {"name": "vlm", "llm": {"path": str(llm_run / "export")}, "encoder": TINY_VIT}
    mix = [{"source": {"name": "synthetic_image_caption", "num_samples": 16, "image_size": 32}, "weight": 0.5, "label": "caption"},
           {"source": TEXT, "weight": 0.5, "label": "text"}]
    # 2 micro-steps of 1 caption + 1 text sample per optimizer step
    cfg = run_config(root / "vlm", model=vlm_node, mix=mix, steps=4, batch=4, per_device=2, run=CPU_RUN, train=SLOW_LR)
    vlm_run = train_from_config(cfg, pm=pm)
    return {"pm": pm, "registry": collect(pm), "llm": llm_run / "export", "vlm": vlm_run, "root": root}


def test_vlm_starts_from_the_llm_export_weights(chain):
    registry = chain["registry"]
    llm_weights = load_file(str(chain["llm"] / "model.safetensors"))
    vlm = registry.build("model", {"name": "vlm", "llm": {"path": str(chain["llm"])}, "encoder": TINY_VIT}, BuildContext(registry))
    fresh = registry.build("model", TINY_LLM, BuildContext(registry))
    state = vlm.llm.state_dict()
    compared = 0
    for name, tensor in llm_weights.items():
        if name == "tok_embeddings.weight" or name == "output.weight":
            rows = tensor.shape[0]  # the byte tokenizer already has <image>: no new rows needed
            assert torch.equal(state[name][:rows], tensor)
        else:
            assert torch.equal(state[name], tensor), name
        compared += 1
    assert compared >= 5
    block = next(n for n in llm_weights if n.startswith("layers.0.") and n.endswith("weight") and llm_weights[n].dim() == 2)
    assert not torch.equal(fresh.state_dict()[block], state[block])  # a fresh init differs: the weights were loaded


def test_cotraining_logs_both_sources(chain):
    rows = [json.loads(line) for line in (chain["vlm"] / "metrics.jsonl").read_text().splitlines()]
    keys = {k for r in rows for k in r}
    assert "loss/caption" in keys and "loss/text" in keys
    step_rows = [r for r in rows if "loss" in r]
    assert step_rows and all(r["samples/caption"] == 2 and r["samples/text"] == 2 for r in step_rows), step_rows


def test_vlm_export_reloads_generates_and_is_a_backbone(chain):
    registry = chain["registry"]
    vlm = load_pretrained(chain["vlm"] / "export", registry=registry)
    img, _ = render_sample(0, 32)
    images = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(32, 32, 3).permute(2, 0, 1)[None, None]
    assert isinstance(vlm.generate(images, [""], max_new_tokens=4)[0], str)
    backbone = registry.build("backbone", {"name": "foundry_vlm", "path": str(chain["vlm"] / "export"), "layers": [-1, -2]},
                              BuildContext(registry))
    tokens, mask = backbone.encode(images.repeat(2, 1, 1, 1, 1), ["pick the cube", "a"])
    assert tokens.shape == (2, mask.shape[1], backbone.out_dim) and backbone.out_dim == 2 * TINY_LLM["dim"]
    assert torch.equal(backbone.vlm.vision.patch.weight, vlm.vision.patch.weight)
    # the image tokens sit where image_token_span says (an expert's flat read-out relies on it)
    first, count = backbone.image_token_span(2)
    ids = backbone.vlm._prefix_ids("pick the cube", 2, "0")
    image_id = backbone.vlm.image_token_id
    assert count == 2 * backbone.vlm.tokens_per_image and set(ids[first : first + count]) == {image_id}
    assert image_id not in ids[:first] + ids[first + count :]
    last = registry.build("backbone", {"name": "foundry_vlm", "path": str(chain["vlm"] / "export"), "tokens": "last",
                                       "freeze": ["vision*"]}, BuildContext(registry))
    assert last.encode(images, ["x"])[0].shape == (1, 1, last.out_dim)
    with pytest.raises(ConfigError, match="tokens: last keeps no image tokens"):
        last.image_token_span(1)
    assert not any(p.requires_grad for p in last.vlm.vision.parameters())


def test_backbone_init_random_is_the_same_architecture_without_the_pretraining(chain):
    """``init: random``: the from-scratch twin of a pretrained backbone (the chain's honest baseline)."""
    registry = chain["registry"]
    node = {"name": "foundry_vlm", "path": str(chain["vlm"] / "export")}
    pretrained = registry.build("backbone", node, BuildContext(registry))
    torch.manual_seed(0)
    scratch = registry.build("backbone", {**node, "init": "random"}, BuildContext(registry))
    a, b = pretrained.vlm.state_dict(), scratch.vlm.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert scratch.vlm.tokenizer.get_vocab() == pretrained.vlm.tokenizer.get_vocab()
    differs = [k for k in a if a[k].dtype.is_floating_point and a[k].numel() > 1 and not torch.equal(a[k], b[k])]
    weights = [k for k in a if k.endswith("weight") and a[k].dim() >= 2]
    assert set(weights) <= set(differs), "a weight matrix kept its pretrained values"
    torch.manual_seed(0)
    again = registry.build("backbone", {**node, "init": "random"}, BuildContext(registry))
    assert all(torch.equal(v, again.vlm.state_dict()[k]) for k, v in b.items())  # seeded: reproducible
    with pytest.raises(ConfigError, match="init"):
        registry.build("backbone", {**node, "init": "scratch"}, BuildContext(registry))


def test_backbone_trains_what_the_vlm_run_froze_unless_its_own_freeze_names_it(chain, tmp_path):
    """A VLM trained with ``freeze: [vision*]`` exports that setting; the VLA built on it must not inherit it."""
    import shutil

    import yaml

    export = tmp_path / "export"
    shutil.copytree(chain["vlm"] / "export", export)
    config = yaml.safe_load((export / "config.yaml").read_text())
    config["model"]["freeze"] = ["vision*"]
    (export / "config.yaml").write_text(yaml.safe_dump(config))
    registry = chain["registry"]
    assert not any(p.requires_grad for p in load_pretrained(export, registry=registry).vision.parameters())
    for init in ("pretrained", "random"):
        backbone = registry.build("backbone", {"name": "foundry_vlm", "path": str(export), "init": init}, BuildContext(registry))
        assert all(p.requires_grad for p in backbone.parameters()), init
    frozen = registry.build("backbone", {"name": "foundry_vlm", "path": str(export), "freeze": ["projector*"]}, BuildContext(registry))
    assert not any(p.requires_grad for p in frozen.vlm.projector.parameters())
    assert all(p.requires_grad for p in frozen.vlm.vision.parameters())


def test_generate_command(chain, cli_runner):
    from foundry_core.cli.main import build_cli

    cli = build_cli(lambda: chain["pm"])
    png = chain["root"] / "x.png"
    render_sample(3, 32)[0].save(png)
    res = cli_runner.invoke(cli, ["generate", "--model", str(chain["vlm"] / "export"), "--image", str(png), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    res = cli_runner.invoke(cli, ["generate", "--model", str(chain["llm"]), "--prompt", "The", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    res = cli_runner.invoke(cli, ["generate", "--model", str(chain["vlm"] / "export")])
    assert res.exit_code == 2 and "give --image" in res.output
    res = cli_runner.invoke(cli, ["generate", "--model", str(chain["vlm"] / "export"), "--image", str(chain["root"] / "nope.png")])
    assert res.exit_code == 2 and "cannot read the image" in res.output


def test_backbone_prompt_first_puts_the_images_after_the_instruction(chain):
    """``prompt_first: P``: BOS + instruction padded to P (masked) + image tokens at fixed positions, so the
    image tokens of a causal LLM read the instruction."""
    from foundry_core.errors import DataError

    registry = chain["registry"]
    node = {"name": "foundry_vlm", "path": str(chain["vlm"] / "export"), "prompt_first": 24}
    backbone = registry.build("backbone", node, BuildContext(registry)).eval()
    img, _ = render_sample(0, 32)
    images = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(32, 32, 3).permute(2, 0, 1)[None, None]
    images = images.repeat(2, 1, 1, 1, 1)
    first, count = backbone.image_token_span(1)
    assert first == 1 + 24 and count == backbone.vlm.tokens_per_image
    with torch.no_grad():
        tokens, mask = backbone.encode(images, ["pick", "pick the red cube"])
        other, _ = backbone.encode(images, ["pick", "pick the blue cube"])
    assert tokens.shape[1] == first + count and torch.isfinite(tokens).all()
    assert mask[:, first:].all() and mask[0, :5].all() and not mask[0, 5:first].any()  # BOS + "pick" (bytes), padding
    # the image tokens have read the instruction: another instruction, other image features
    assert torch.allclose(tokens[0, first:], other[0, first:]) and not torch.allclose(tokens[1, first:], other[1, first:])
    with pytest.raises(DataError, match="prompt_first allows 24"):
        backbone.encode(images[:1], ["a very long instruction " * 8])
