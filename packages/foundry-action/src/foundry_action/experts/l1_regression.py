"""L1 regression action expert: one forward pass predicts the whole action window (no noise, no time).

The non-context action tokens are zeros (the learned position embeddings tell the steps apart); past
actions, where ``past_mask`` is true, are clean pinned context. Loss: mean absolute error over
``future_mask``. A deterministic baseline: it averages multimodal demonstrations.

Optional gripper classification (``gripper_dims: [i, ...]``): those action dimensions are open/close
commands, and the output there is a logit trained with binary cross-entropy instead of an L1 value.
Why: a scripted gripper takes two values, and the L1 median of a mostly-"closed" label stayed closed
where the expert opens on hidden state (pick_place_bin hovered closed over the bin). The two command
values are the smallest and largest normalized target seen in training at each window position and
gripper dimension (buffers, so a checkpoint or export carries them); the label is "above their
midpoint", and sampling emits exactly one of the two values (at positions trained; a past step is
always pinned context in training and keeps its raw output): by the logit's sign, or with
``gripper_choice: sample`` drawn with the predicted probability. Why sampling: the scripted expert
closes/opens only once the measured pose is within a tolerance (hidden state), so at a steady hover
the label is a coin with a fixed bias; the sign then repeats one answer forever (traces: hovering
open over the block, closed over the bin), a draw ends the hover after a few chunks.
Test: ``uv run pytest packages/foundry-action/tests/test_action_experts.py
packages/foundry-action/tests/test_action_gripper_classification.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from foundry_action.experts.base import (
    ExpertBase,
    ExpertConfig,
    ExpertDims,
    context_and_target,
    masked_mean,
    repeat_batch,
    sampling_noise,
)
from foundry_core.errors import ConfigError


class L1RegressionExpert(ExpertBase):
    """Direct action-window regression with an L1 loss (binary cross-entropy on ``gripper_dims``)."""

    uses_time = False

    @dataclass(kw_only=True)
    class Config(ExpertConfig):
        #: Action dimensions that are open/close gripper commands (classified, not regressed); [] = none.
        gripper_dims: list[int] = field(default_factory=list)
        #: How a gripper command is chosen from its logit: ``sign`` (open where P(open) > 0.5) or
        #: ``sample`` (open where P(open) > u, one uniform u per sample and chunk).
        gripper_choice: Literal["sign", "sample"] = "sign"

        def validate(self) -> None:
            super().validate()
            if len(set(self.gripper_dims)) != len(self.gripper_dims):
                raise ConfigError(f"gripper_dims must not repeat a dimension, got {self.gripper_dims}")

    def __init__(self, cfg: Config, dims: ExpertDims) -> None:
        super().__init__(cfg, dims)
        bad = [i for i in cfg.gripper_dims if not 0 <= i < dims.action_dim]
        if bad:
            raise ConfigError(
                f"gripper_dims: {bad} out of range for action_dim {dims.action_dim} (valid: 0..{dims.action_dim - 1})"
            )
        if cfg.gripper_dims:  # no new state otherwise: exports without gripper_dims load as before
            g = len(cfg.gripper_dims)
            self.register_buffer("gripper_index", torch.tensor(cfg.gripper_dims), persistent=False)
            # Command values per (window position, gripper dim); low > high: no training target seen yet.
            self.register_buffer("gripper_low", torch.full((dims.window, g), float("inf")))
            self.register_buffer("gripper_high", torch.full((dims.window, g), float("-inf")))

    def _predict(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> tuple:
        device = cond.device
        actions, context, future = context_and_target(batch, self.dims, cond)
        inputs = torch.where(context[..., None], actions, torch.zeros_like(actions))
        pred = self.net(cond, cond_mask, self._proprio(batch, device), inputs, context).float()
        return pred, actions, context, future

    @torch.no_grad()
    def _track_command_values(self, targets: torch.Tensor, future: torch.Tensor) -> None:
        """Widen the per-position [low, high] of the gripper targets [B, T, G] where ``future`` [B, T]."""
        valid = future[..., None]
        low = torch.where(valid, targets, torch.full_like(targets, float("inf"))).amin(0)
        high = torch.where(valid, targets, torch.full_like(targets, float("-inf"))).amax(0)
        self.gripper_low.copy_(torch.minimum(self.gripper_low, low))
        self.gripper_high.copy_(torch.maximum(self.gripper_high, high))

    def loss(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        # Repeats are accepted for config symmetry; with no noise they only re-weight the batch.
        cond, cond_mask, batch = repeat_batch(self.cfg.num_action_head_repeats, cond, cond_mask, batch)
        pred, actions, _, future = self._predict(cond, cond_mask, batch)
        err = (pred - actions).abs()
        if self.cfg.gripper_dims:
            targets = actions[..., self.gripper_index]
            if self.training:
                self._track_command_values(targets, future)
            labels = (targets > (self.gripper_low + self.gripper_high) / 2).float()
            bce = F.binary_cross_entropy_with_logits(pred[..., self.gripper_index], labels, reduction="none")
            err = err.index_copy(-1, self.gripper_index, bce)
        return masked_mean(err, future)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        pred, actions, context, _ = self._predict(cond, cond_mask, batch)
        if self.cfg.gripper_dims:
            seen = self.gripper_low <= self.gripper_high  # [T, G]
            if not bool(seen.any()):
                raise ValueError(
                    "l1_regression with gripper_dims has seen no training target, so it does not know "
                    "the open/close command values: train it first"
                )
            # A position never trained (a past step, always pinned in training) keeps its raw output,
            # as untrained as every other dim there; the policy executes only trained positions.
            logits = pred[..., self.gripper_index]
            if self.cfg.gripper_choice == "sample":
                # One u for the whole chunk (no open/close flicker inside it), from the row's own
                # generator when given: P(open) = sigmoid(logit) > u, u = Phi(z) uniform.
                u = 0.5 * (1 + torch.erf(sampling_noise(logits[:, :1, :1], batch) / 2**0.5))
                is_open = torch.sigmoid(logits) > u
            else:
                is_open = logits > 0
            command = torch.where(is_open, self.gripper_high, self.gripper_low)
            pred = pred.index_copy(-1, self.gripper_index, torch.where(seen, command, logits))
        return torch.where(context[..., None], actions, pred)
