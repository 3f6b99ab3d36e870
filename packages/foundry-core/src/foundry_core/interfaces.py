"""Interfaces (protocols) of every component kind, so packages implement them without importing
each other's internals. Only typing here: importing this module imports no torch.

Batch contract (what data sources yield and models consume). Every batch is a dict with a
``"modality"`` key and tensors with a leading batch dimension B:

* ``text``: ``input_ids`` int64 [B, L], ``labels`` int64 [B, L] (-100 = ignored),
  optional ``position_ids`` [B, L] and ``document_ids`` int64 [B, L] (packing: attention must not
  cross documents).
* ``image_caption``: ``images`` uint8 [B, N, 3, H, W], ``captions`` list[str] (the model tokenizes;
  prompts go in ``prompts`` list[str] when present).
* ``robot`` (see foundry-action's docs/episode_store.md): ``images`` uint8 [B, N_cam*N_t, 3, H, W],
  ``image_mask`` bool [B, N_cam*N_t], ``proprio`` float32 [B, P+1, Dp] (normalized), ``actions``
  float32 [B, T, A] (normalized; T = past + 1 + future), ``past_mask`` bool [B, T], ``future_mask``
  bool [B, T], ``instruction`` list[str], ``task`` list[str].

Observations for a policy (one step, no batch dim): ``{"images": {camera: uint8 [H, W, 3]},
"proprio": float32 [Dp], "instruction": str}``; a policy returns an absolute action chunk float32
[H, A] (A = 10 per arm: xyz, rot6d as the first two rows of R, gripper opening in metres).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

Batch = dict[str, Any]


@runtime_checkable
class TrainableModel(Protocol):
    """A model the trainer can train (an ``nn.Module``). The trainer never branches on model type.

    Only ``compute_loss`` is required; the trainer reads the others with ``getattr`` and defaults
    (no FSDP blocks, 0 FLOPs = MFU not reported, nothing exported beside the weights). Optional
    attributes: ``no_weight_decay() -> set[str]`` (extra parameter names without weight decay),
    ``ddp_find_unused_parameters`` (bool, default True), ``gradient_checkpointing_enable()``.
    Samples in a batch = leading dim of its first tensor (or ``batch["num_samples"]``); tokens =
    ``(labels != -100).sum()`` when ``labels`` exists.
    """

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the scalar loss of one micro-batch and extra metrics (plain floats)."""
        ...

    def fsdp_block_types(self) -> tuple[type[nn.Module], ...]:
        """Module classes to wrap with ``fully_shard`` one by one (nested HF blocks included)."""
        ...

    def flops_per_sample(self, batch: Batch) -> float:
        """Training FLOPs (forward + backward) for one sample of ``batch``; used for MFU. 0 = unknown."""
        ...

    def export_artifacts(self, out_dir: str) -> dict[str, Any]:
        """Write what the model needs beside its weights (tokenizer, processor, stats) into ``out_dir``.

        Return updates to the model's config node, with paths RELATIVE to ``out_dir`` (e.g.
        ``{"tokenizer": "tokenizer"}``); the exporter merges them into ``export/config.yaml``'s
        ``model`` node, and ``load_pretrained`` rebuilds the model with
        ``BuildContext.pretrained_dir`` set to the export folder, against which the component
        resolves those relative paths.
        """
        ...


@runtime_checkable
class DataSource(Protocol):
    """Yields collated batches of one modality; deterministic from the seed and resumable.

    ``batches(batch_size, rank, world_size, seed)`` shards the data across ranks and yields batches,
    forever (epochs repeat with a new order derived from the seed and epoch) or until finite data ends
    (the trainer then stops every rank at the same step). It keeps a cursor that ``state_dict()``
    returns and ``load_state_dict()`` restores before ``batches`` is called (exact resume); the cursor
    must already count a batch when it is yielded, hold plain types/tensors only, and should count
    global progress so a run can resume on another world size. Helpers: ``foundry_core.data.base``.
    """

    modality: str

    def batches(self, batch_size: int, *, rank: int, world_size: int, seed: int) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class RobotDataSource(DataSource, Protocol):
    """A ``DataSource`` of modality ``"robot"`` that describes itself to the policy trained on it.

    The trainer builds every ``data.mix`` source once and hands them to the model builder
    (``BuildContext.data_sources``), like lerobot's ``make_policy(cfg, ds_meta)``: a ``vla`` takes its
    cameras, dims, window and normalization from the mix's robot source instead of building its own
    copy. ``metadata()`` holds ``cameras``, ``image_size``, ``image_offsets``, ``action_fields``,
    ``proprio_fields``, ``action_dim``, ``proprio_dim``, ``field_dims``, ``past``, ``future``, ``fps``
    and ``normalization``; ``stats`` are the normalization statistics
    (``foundry_action.normalization.NormStats``) the policy keeps and exports.
    """

    stats: Any

    def metadata(self) -> dict[str, Any]: ...


@runtime_checkable
class Encoder(Protocol):
    """Images uint8 [B, N, 3, H, W] -> patch tokens float [B, N * tokens_per_image, out_dim]."""

    out_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Backbone(Protocol):
    """(images, prompts) -> conditioning tokens for an action expert.

    ``encode(images uint8 [B, N, 3, H, W], prompts list[str])`` returns ``(tokens float [B, L, out_dim],
    mask bool [B, L])``. A backbone does its own image preprocessing and tokenization. Optional:
    ``image_token_span(num_images, image_size=(H, W)) -> (first, count)`` where the image tokens sit at
    fixed positions of ``tokens`` (needed by an expert's flat image read-out); ``image_size`` is the
    policy's input size, for backbones whose token count depends on it (``hf_vlm``). Image validity is
    handled around the backbone by the vla (foundry-action ``vla.py``): invalid images arrive as all-black
    frames, and the tokens inside ``image_token_span`` of invalid images are masked out after ``encode``.
    """

    out_dim: int

    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class ActionExpert(Protocol):
    """Predicts a normalized action chunk [B, T, A] from conditioning tokens and proprioception."""

    def loss(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: Batch) -> torch.Tensor: ...

    def sample(self, cond: torch.Tensor, cond_mask: torch.Tensor, batch: Batch) -> torch.Tensor: ...


@runtime_checkable
class Policy(Protocol):
    """A loaded policy: observation in, absolute action chunk out (see module docstring)."""

    def reset(self) -> None: ...

    def act(self, observation: Mapping[str, Any]) -> Any: ...

    def metadata(self) -> dict[str, Any]: ...


@runtime_checkable
class Task(Protocol):
    """A simulated task with a seeded initial-state distribution and a success predicate.

    Optional (not part of the protocol, looked up with ``getattr``): ``episode_metrics() -> dict[str,
    float]``, end-of-episode measurements that say why an episode failed, e.g. ``goal_distance`` (m)
    when the goal was missed by a little or by a lot. The rollout runner records them under the
    episode's ``metrics`` key in results.json; when the method raises or returns non-finite values the
    outcome stands and ``metrics_error`` records the traceback instead (a crashed episode has neither).
    """

    instruction: str
    time_limit_s: float
    control_dt: float

    def reset(self, seed: int) -> Mapping[str, Any]: ...

    def step(self, action: Any) -> Mapping[str, Any]: ...

    def is_success(self) -> bool: ...
