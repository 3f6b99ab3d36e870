"""``vla`` model: a backbone (VLM or plain vision encoder, built by component name) + an action expert.

VLM -> VLA is one config line: ``backbone: {name: foundry_vlm, path: runs/vlm/export}``. The model
learns which cameras, dims and window it serves from the robot data source of the run's ``data.mix``,
which the trainer builds once and hands over (``BuildContext.data_sources``, the contract is
``interfaces.RobotDataSource``), and takes that source's normalization statistics. Outside training
(or to pick one of several robot sources) ``data:`` names a robot source node, built for the model. ``export_artifacts`` writes ``stats/`` and ``policy.json`` (the policy
metadata) and rewrites the node to ``{data: null, policy: policy.json}``, so an export rebuilds with
no training data. A backbone with its own ``export_artifacts`` writes into ``<export>/backbone`` and is
rebuilt with ``ctx.pretrained_dir`` pointing there.

Batches of another modality (co-training with image-caption or text sources) are delegated to the
``compute_loss`` of the backbone or of the model it wraps (the composed VLM). Test: ``uv run pytest packages/foundry-action/tests/test_action_vla.py``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foundry_action.normalization import NormStats
from foundry_core.config import Node, component, to_dict
from foundry_core.errors import ConfigError, DataError
from foundry_core.interfaces import RobotDataSource
from foundry_core.registry import BuildContext

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"
STATS_DIR = "stats"
BACKBONE_DIR = "backbone"
SPEC_KEYS = (
    "cameras",
    "image_size",
    "image_offsets",
    "action_fields",
    "proprio_fields",
    "action_dim",
    "proprio_dim",
    "field_dims",
    "past",
    "future",
    "fps",
    "normalization",
)


def check_spec(spec: dict[str, Any], stats: NormStats, where: str) -> None:
    """The policy metadata and the stats must describe the same fields and dims (fail loudly)."""
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise DataError(f"{where}: policy metadata lacks {', '.join(missing)}")
    for kind in ("action", "proprio"):
        total = 0
        for name in spec[f"{kind}_fields"]:
            if name not in stats.dims:
                raise DataError(
                    f"{where}: the statistics have no field {name!r} (they have {', '.join(stats.dims)})"
                )
            size = math.prod(stats.dims[name])
            if size != int(spec["field_dims"][name]):
                raise DataError(
                    f"{where}: field {name!r} has {spec['field_dims'][name]} dims but its statistics "
                    f"have {size} ({stats.dims[name]})"
                )
            total += size
        if total != int(spec[f"{kind}_dim"]):
            raise DataError(
                f"{where}: {kind}_dim is {spec[f'{kind}_dim']} but the statistics of "
                f"{spec[f'{kind}_fields']} add up to {total}"
            )


def _mix_robot_source(ctx: BuildContext) -> tuple[RobotDataSource, str]:
    """The one robot source of the run's data.mix (built by the trainer), and where it is."""
    robots = {
        label: s
        for label, s in ctx.data_sources.items()
        if getattr(s, "modality", None) == "robot" and isinstance(s, RobotDataSource)
    }
    if len(robots) == 1:
        label, source = next(iter(robots.items()))
        return source, f"data.mix source {label!r}"
    if not robots:
        raise ConfigError(
            "model.data: no robot data source to take the policy's cameras, dims and statistics from: the "
            "run's data.mix has none (or the model is built outside training); add one to data.mix, give "
            "model.data (a robot data_source node), or load an export"
        )
    raise ConfigError(
        f"model.data: data.mix has {len(robots)} robot sources ({', '.join(robots)}); give model.data to say "
        "whose cameras, dims and statistics the policy takes"
    )


class VLA(nn.Module):
    """Vision-language-action model; ``compute_loss`` trains, ``predict`` samples normalized action windows."""

    @dataclass(kw_only=True)
    class Config:
        backbone: Node = component("backbone")
        expert: Node = component("action_expert")
        #: The robot data source the policy is trained on (cameras, dims, window and stats come from it);
        #: default: the one robot source of the run's data.mix, handed over by the trainer.
        data: Node | None = component("data_source", None)
        #: Set by export: policy metadata file inside the export folder (replaces ``data``).
        policy: str | None = None
        freeze_backbone: bool = False
        #: fnmatch globs over backbone parameter names to freeze / to unfreeze again (applied after).
        freeze: list[str] = field(default_factory=list)
        unfreeze: list[str] = field(default_factory=list)
        #: Condition on the language instruction (false: an empty prompt, e.g. a vision-only baseline).
        use_instruction: bool = True

    def __init__(
        self, cfg: Config, backbone: nn.Module, expert: nn.Module, spec: dict[str, Any], stats: NormStats
    ):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.expert = expert
        self.spec = spec
        self.stats = stats
        self._apply_freeze()

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> VLA:
        spec, stats = cls._load_spec(cfg, ctx)
        backbone_dir = Path(ctx.pretrained_dir, BACKBONE_DIR) if ctx.pretrained_dir else None
        bctx = BuildContext(
            ctx.registry,
            device=ctx.device,
            tokenizer=ctx.tokenizer,
            extras=ctx.extras,
            pretrained_dir=str(backbone_dir) if backbone_dir and backbone_dir.is_dir() else None,
        )
        backbone = ctx.registry.build("backbone", cfg.backbone, bctx, where="model.backbone")
        if not isinstance(getattr(backbone, "out_dim", None), int):
            raise ConfigError(f"model.backbone: {type(backbone).__name__} has no integer out_dim")
        if cfg.use_instruction and getattr(backbone, "reads_prompts", True) is False:
            raise ConfigError(
                f"model.use_instruction: backbone {cfg.backbone.name!r} ignores the instruction "
                "(no tokenizer or text input); set model.use_instruction=false for a vision-only policy, "
                "or give the backbone a language input (vision_encoder: text: bytes; foundry_vlm; hf_vlm)"
            )
        past, future = int(spec["past"]), int(spec["future"])
        dims = {
            "cond": backbone.out_dim,
            "action": int(spec["action_dim"]),
            "proprio": int(spec["proprio_dim"]),
            "window": past + 1 + future,
            "proprio_steps": past + 1,
        }
        if getattr(cfg.expert.config, "image_readout", 0):
            span = getattr(backbone, "image_token_span", None)
            if span is None:
                raise ConfigError(
                    f"model.expert.image_readout: backbone {cfg.backbone.name!r} "
                    f"({type(backbone).__name__}) does not say where its image tokens are "
                    "(no image_token_span); use image_readout: 0 with it"
                )
            image_size = tuple(int(x) for x in spec["image_size"])
            dims["image_span"] = span(
                len(spec["cameras"]) * len(spec["image_offsets"]), image_size=image_size
            )
        ectx = BuildContext(ctx.registry, device=ctx.device, dims=dims, extras=ctx.extras)
        expert = ctx.registry.build("action_expert", cfg.expert, ectx, where="model.expert")
        spec = {**spec, "is_language_conditioned": cfg.use_instruction, "expert": cfg.expert.name}
        return cls(cfg, backbone, expert, spec, stats).to(ctx.device)

    @staticmethod
    def _load_spec(cfg: Config, ctx: BuildContext) -> tuple[dict[str, Any], NormStats]:
        if cfg.policy is not None:
            if ctx.pretrained_dir is None:
                raise ConfigError("model.policy is only valid when loading an export (use 'data' to train)")
            folder = Path(ctx.pretrained_dir)
            path = folder / cfg.policy
            if not path.is_file():
                raise DataError(f"{folder}: policy metadata {cfg.policy} not found")
            spec = json.loads(path.read_text())
            stats = NormStats.load(folder / STATS_DIR)
            stats = stats.with_method(spec.get("normalization", stats.method))
            check_spec(spec, stats, str(path))
            return spec, stats
        if cfg.data is not None:
            source = ctx.registry.build("data_source", cfg.data, ctx, where="model.data")
            where = f"model.data ({getattr(cfg.data.config, 'path', cfg.data.name)})"
            if getattr(source, "modality", None) != "robot" or not isinstance(source, RobotDataSource):
                raise ConfigError(
                    f"model.data: {cfg.data.name!r} is not a robot data source with metadata() and stats"
                )
        else:
            source, where = _mix_robot_source(ctx)
        spec = dict(source.metadata())
        check_spec(spec, source.stats, where)
        return spec, source.stats

    def _apply_freeze(self) -> None:
        from foundry_core.freeze import set_trainable

        params = dict(self.backbone.named_parameters())
        if self.cfg.freeze_backbone:
            for p in params.values():
                p.requires_grad_(False)
        set_trainable(self.backbone, self.cfg.freeze, False, "model.freeze (backbone parameters)")
        set_trainable(self.backbone, self.cfg.unfreeze, True, "model.unfreeze (backbone parameters)")
        frozen = sum(p.numel() for p in params.values() if not p.requires_grad)
        if frozen:
            log.info(
                "vla: %d of %d backbone parameters frozen", frozen, sum(p.numel() for p in params.values())
            )

    # ------------------------------------------------------------------ forward
    def prompts(self, batch: dict[str, Any]) -> list[str]:
        n = batch["images"].shape[0]
        if not self.cfg.use_instruction:
            return [""] * n
        return [str(s) for s in batch.get("instruction") or [""] * n]

    def condition(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone tokens and mask of a robot batch (run once, shared by every noise sample).

        Image validity (``image_mask``, false = no real frame: before the episode start, or a step the
        source has no image for) is honoured for every backbone: an invalid image reaches the backbone
        as an all-black frame (so its pixels cannot matter), and where the backbone says where its image
        tokens are (``image_token_span``) those of invalid images are masked out of the conditioning
        (mask false, values zero), which the experts' attention and image read-out respect.
        """
        images, valid = batch["images"], batch.get("image_mask")
        if valid is not None:
            valid = valid.to(device=images.device, dtype=torch.bool)
            if tuple(valid.shape) != tuple(images.shape[:2]):
                raise DataError(
                    f"vla: image_mask has shape {tuple(valid.shape)}, images {tuple(images.shape[:2])}"
                )
            if bool(valid.all()):
                valid = None
            else:
                images = images.masked_fill(~valid[:, :, None, None, None], 0)
        tokens, mask = self.backbone.encode(images, self.prompts(batch))
        if valid is not None:
            span = self._image_span(valid.shape[1])
            if span is not None:
                first, count = span
                per_image = count // valid.shape[1]
                keep = torch.ones_like(mask, dtype=torch.bool)
                keep[:, first : first + count] = valid.repeat_interleave(per_image, dim=1)
                mask = mask.bool() & keep
                tokens = tokens * keep[..., None].to(tokens.dtype)
        self._cond_tokens = int(tokens.shape[1])  # for flops_per_sample
        return tokens, mask

    def _image_span(self, num_images: int) -> tuple[int, int] | None:
        """(first, count) of the backbone's image tokens, or None where it keeps no fixed image tokens."""
        span_of = getattr(self.backbone, "image_token_span", None)
        if span_of is None:
            return None
        try:
            first, count = span_of(num_images, image_size=tuple(int(x) for x in self.spec["image_size"]))
        except ConfigError:  # e.g. ``tokens: last``: the image tokens are not kept
            return None
        return (int(first), int(count)) if count % num_images == 0 else None

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        modality = batch.get("modality")
        if modality == "robot":
            tokens, mask = self.condition(batch)
            loss = self.expert.loss(tokens, mask, batch)
            return loss, {"action_loss": float(loss.detach())}
        trainable = self._backbone_model()
        if trainable is None:
            raise DataError(
                f"vla: got a {modality!r} batch, but backbone {type(self.backbone).__name__} has no compute_loss; "
                "co-training on non-robot data needs a language backbone (foundry_vlm or hf_vlm)"
            )
        return trainable.compute_loss(batch)

    def _backbone_model(self) -> Any:
        """The backbone if it has ``compute_loss``, else the model it wraps (a direct child, e.g. ``vlm``)."""
        if callable(getattr(self.backbone, "compute_loss", None)):
            return self.backbone
        for child in self.backbone.children():
            if callable(getattr(child, "compute_loss", None)):
                return child
        return None

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], **sample_kw: Any) -> torch.Tensor:
        """Normalized action window [B, T, A] (past steps pinned to ``batch['actions']`` where given)."""
        tokens, mask = self.condition(batch)
        return self.expert.sample(tokens, mask, batch, **sample_kw)

    # ------------------------------------------------------------------ trainer hooks
    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        types: set[type[nn.Module]] = set(self.expert.fsdp_block_types())
        inner = getattr(self.backbone, "fsdp_block_types", None)
        if inner is not None:
            types.update(inner())
        return tuple(types)

    def flops_per_sample(self, batch: dict[str, Any]) -> float:
        """Robot batches: the whole model. The expert's 6 x params x sequence x repeats, plus the
        backbone's forward FLOPs of this batch (``encode_flops``), tripled when the backbone trains
        (its backward) and counted once when it is frozen; a backbone without ``encode_flops`` adds 0
        (MFU is then a lower bound). Other batches: the backbone's own estimate (0 = unknown)."""
        if batch.get("modality") != "robot":
            inner = getattr(self._backbone_model(), "flops_per_sample", None)
            return float(inner(batch)) if inner is not None else 0.0
        d = self.expert.dims
        seq = (
            1 + getattr(self, "_cond_tokens", 1) + d.proprio_steps + d.window
        )  # time + cond + proprio + actions
        n = sum(p.numel() for p in self.expert.parameters())
        expert = 6.0 * n * seq * getattr(self.expert.cfg, "num_action_head_repeats", 1)
        encode = getattr(self.backbone, "encode_flops", None)
        backbone = float(encode()) if encode is not None else 0.0
        trains = any(p.requires_grad for p in self.backbone.parameters())
        return expert + backbone * (3.0 if trains else 1.0)

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """Write stats + policy metadata (+ the backbone's own artifacts) and point the node at them."""
        out = Path(out_dir)
        self.stats.save(out / STATS_DIR)
        (out / POLICY_FILE).write_text(json.dumps(self.spec, indent=2, default=str))
        inner = getattr(self.backbone, "export_artifacts", None)
        node: dict[str, Any] = {"data": None, "policy": POLICY_FILE}
        if inner is not None:
            (out / BACKBONE_DIR).mkdir(exist_ok=True)
            updates = inner(str(out / BACKBONE_DIR))
            if updates:
                node["backbone"] = {**to_dict(self.cfg.backbone), **updates}
        return node
