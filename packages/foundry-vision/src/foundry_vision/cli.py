"""``foundry generate``: caption an image with a VLM export (or continue a prompt with an LLM export).

Import-light at module level (click only); torch and the model are imported inside the command.

Test: ``uv run pytest packages/foundry-vision/tests/test_vision_cli.py``.
"""

from __future__ import annotations

import click

from foundry_core.errors import DataError, FoundryError


def load_images(paths: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """Image files -> uint8 [1, N, 3, H, W] (all resized to the first image's size)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    tensors = []
    size = None
    for p in paths:
        try:
            img = Image.open(p).convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise DataError(f"--image {p}: cannot read the image: {exc}") from None
        size = size or img.size
        img = img.resize(size) if img.size != size else img
        arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
        tensors.append(arr.permute(2, 0, 1))
    return torch.stack(tensors)[None]


def add_commands(cli: click.Group) -> None:
    @cli.command("generate")
    @click.option("--model", "model_path", required=True, help="An export folder (VLM, hf_vlm or LLM) or a local HF VLM folder.")
    @click.option("--image", "images", multiple=True, help="Image file(s); repeat for several images (VLMs only).")
    @click.option("--prompt", default="", help="Prompt text (placed after the image).")
    @click.option("--max-new-tokens", default=64, show_default=True, type=int)
    @click.option("--device", default="cpu", show_default=True)
    @click.pass_context
    def generate(ctx: click.Context, model_path: str, images: tuple[str, ...], prompt: str, max_new_tokens: int, device: str) -> None:
        """Print the model's continuation: a caption for --image with a VLM, text for an LLM."""
        from pathlib import Path

        from foundry_core.export import load_pretrained
        from foundry_core.registry import collect

        if (Path(model_path) / "config.yaml").is_file():
            model = load_pretrained(model_path, device=device, registry=collect(ctx.obj["pm_factory"]()))
        elif (Path(model_path) / "config.json").is_file():
            from foundry_vision.models.hf_vlm import HFVLM

            model = HFVLM(HFVLM.Config(path=model_path)).to(device).eval()
        else:
            raise FoundryError(f"--model {model_path}: not an export folder (config.yaml) nor a Hugging Face folder (config.json)")
        is_vlm = hasattr(model, "encode") and hasattr(model, "generate")
        if is_vlm:
            if not images:
                raise FoundryError(f"--model {model_path} is a vision-language model: give --image")
            click.echo(model.generate(load_images(images), [prompt], max_new_tokens=max_new_tokens)[0])
            return
        if images:
            raise FoundryError(f"--model {model_path} is a text-only model ({type(model).__name__}): drop --image")
        tok = getattr(model, "tokenizer", None)
        if tok is None or not hasattr(model, "generate"):
            raise FoundryError(f"--model {model_path}: {type(model).__name__} cannot generate text")
        import torch

        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens, eos_token_id=tok.eos_token_id)
        click.echo(tok.decode(out[0, len(ids) :].tolist(), skip_special_tokens=True))
