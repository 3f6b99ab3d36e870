"""Policy runtime: a loaded VLA export + normalization + observation history + chunk execution.

``Policy.from_pretrained(export_dir)`` rebuilds the model with ``foundry_core.export.load_pretrained``
(the export holds the weights, ``stats/`` and ``policy.json``). Per control step:

* ``observe(obs)`` validates one observation (``{"images": {cam: uint8 [H, W, 3]}, "proprio":
  float32 [Dp], "instruction": str}``; errors name the key) and appends it to the history that
  image offsets (e.g. ``[-1, 0]``) and past proprioception need; the first step is edge-padded like
  the training windows;
* ``plan()`` runs the model on the history and returns the absolute (unnormalized) chunk float32
  ``[1 + future, A]`` from the anchor on (a policy trained on ``relative_actions`` predicts in the
  frame of the current proprio pose; the chunk is composed back onto it); ``act(obs)`` = ``observe`` + ``plan``;
* ``plan_batch(policies)`` plans for several episodes (clones sharing one model) in one forward
  pass; seeded episodes draw noise from their own generators, so batching does not change their chunks;
* ``record_action(a)`` tells the policy which action was executed, so later plans get it as pinned
  past-action context (without it, past actions are sampled like at an episode start).

``foundry_action.executor.ChunkExecutor`` turns the chunks into one action per control step.
Test: ``uv run pytest packages/foundry-action/tests/test_action_policy.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundry_action.rotations import absolute_to_relative, relative_to_absolute
from foundry_core.errors import DataError


class ObservationError(DataError):
    """An observation does not match what the policy was trained on (names the key)."""


class Policy:
    """A VLA behind the observation/action contract of ``foundry_core.interfaces.Policy``."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        checkpoint: str = "",
        name: str | None = None,
        device: str = "cpu",
        resize_images: bool = False,
        sample_kw: Mapping[str, Any] | None = None,
    ) -> None:
        spec = getattr(model, "spec", None)
        if spec is None or getattr(model, "stats", None) is None:
            raise DataError(f"{checkpoint or type(model).__name__}: not a policy model (no policy metadata/stats)")
        self.model = model.to(device).eval()
        self.device = device
        self.spec = dict(spec)
        self.stats = model.stats
        self.checkpoint = checkpoint
        self.name = name or (Path(checkpoint).parent.name if checkpoint else "policy")
        self.resize_images = resize_images
        self.sample_kw = dict(sample_kw or {})
        self.cameras: list[str] = list(spec["cameras"])
        self.image_hw = tuple(int(x) for x in spec["image_size"])
        self.offsets = [int(o) for o in spec["image_offsets"]]
        if max(self.offsets) > 0:
            raise DataError(f"{checkpoint}: image_offsets {self.offsets} look into the future; a policy cannot")
        self.past, self.future = int(spec["past"]), int(spec["future"])
        self.action_dim, self.proprio_dim = int(spec["action_dim"]), int(spec["proprio_dim"])
        self.language = bool(spec.get("is_language_conditioned", True))
        self.relative = bool(spec.get("relative_actions", False))
        self.per_timestep = bool(spec.get("per_timestep_stats", False)) or self.relative
        self._history = max(self.past, -min(self.offsets)) + 1
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        export_dir: str | Path,
        *,
        device: str = "cpu",
        registry: Any = None,
        name: str | None = None,
        resize_images: bool = False,
        sample_kw: Mapping[str, Any] | None = None,
    ) -> Policy:
        """Load an export folder (local or fsspec URL); stats/metadata mismatches fail loudly."""
        from foundry_core.export import load_pretrained

        model = load_pretrained(export_dir, device=device, registry=registry)
        return cls(model, checkpoint=str(export_dir), name=name, device=device, resize_images=resize_images,
                   sample_kw=sample_kw)

    # ------------------------------------------------------------------ state
    def reset(self, seed: int | None = None) -> None:
        """Forget the history (new episode); ``seed`` makes the sampling noise reproducible
        (without one, noise comes from torch's global RNG)."""
        self._frames: deque[dict[str, np.ndarray]] = deque(maxlen=self._history)
        self._proprio: deque[np.ndarray] = deque(maxlen=self._history)
        self._actions: dict[int, np.ndarray] = {}
        self._instruction = ""
        self._step = -1
        # Each policy instance draws its sampling noise from its own generator, so episodes served
        # side by side (and batched into one forward pass) do not disturb each other's randomness.
        self._generator = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))

    def clone(self) -> Policy:
        """A new policy with the same model (weights shared, not copied) and an empty history."""
        return Policy(self.model, checkpoint=self.checkpoint, name=self.name, device=self.device,
                      resize_images=self.resize_images, sample_kw=self.sample_kw)

    def metadata(self) -> dict[str, Any]:
        """What a server reports (GetPolicyMetadata) and a client needs to build observations."""
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "cameras": list(self.cameras),
            "image_size": list(self.image_hw),
            "image_offsets": list(self.offsets),
            "proprio_dim": self.proprio_dim,
            "action_dim": self.action_dim,
            "action_fields": list(self.spec["action_fields"]),
            "proprio_fields": list(self.spec["proprio_fields"]),
            "semantics": dict(self.spec.get("semantics", {})),
            "past": self.past,
            "future": self.future,
            "chunk_size": self.future + 1,
            "fps": float(self.spec["fps"]),
            "expert": self.spec.get("expert"),
            "is_language_conditioned": self.language,
            "relative_actions": self.relative,
            "field_dims": {k: int(v) for k, v in self.spec["field_dims"].items()},
            **({"camera_id_to_semantic_name": dict(self.spec["camera_id_to_semantic_name"])}
               if self.spec.get("camera_id_to_semantic_name") else {}),
        }

    # ------------------------------------------------------------------ observations
    def validate(self, observation: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
        """Check one observation against the metadata; returns (frames, proprio, instruction)."""
        if not isinstance(observation, Mapping):
            raise ObservationError(f"observation must be a mapping, got {type(observation).__name__}")
        for key in ("images", "proprio"):
            if key not in observation:
                raise ObservationError(f"observation is missing {key!r} (keys: {', '.join(map(str, observation))})")
        images = observation["images"]
        if not isinstance(images, Mapping):
            raise ObservationError(f"observation['images'] must map camera name -> image, got {type(images).__name__}")
        frames = {}
        for cam in self.cameras:
            if cam not in images:
                raise ObservationError(
                    f"observation['images'] has no camera {cam!r} (policy cameras: {', '.join(self.cameras)}; "
                    f"given: {', '.join(map(str, images)) or 'none'})"
                )
            frames[cam] = self._check_image(cam, images[cam])
        proprio = np.asarray(observation["proprio"])
        if proprio.shape != (self.proprio_dim,):
            raise ObservationError(f"observation['proprio']: expected shape ({self.proprio_dim},), got {proprio.shape}")
        if not np.issubdtype(proprio.dtype, np.number) or not np.isfinite(proprio).all():
            raise ObservationError(f"observation['proprio']: expected finite numbers, got {proprio.dtype} {proprio}")
        instruction = observation.get("instruction", "")
        if self.language and not (isinstance(instruction, str) and instruction.strip()):
            raise ObservationError(f"observation['instruction']: this policy is language-conditioned and needs a "
                                   f"non-empty string, got {instruction!r}")
        return frames, proprio.astype(np.float32), str(instruction or "")

    def _check_image(self, cam: str, img: Any) -> np.ndarray:
        key = f"observation['images'][{cam!r}]"
        if isinstance(img, torch.Tensor):
            img = img.cpu().numpy()
        if not isinstance(img, np.ndarray):
            raise ObservationError(f"{key}: expected a uint8 array [H, W, 3], got {type(img).__name__}")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ObservationError(f"{key}: expected uint8 [{self.image_hw[0]}, {self.image_hw[1]}, 3], "
                                   f"got {img.dtype} {list(img.shape)}")
        if img.shape[:2] != self.image_hw:
            if not self.resize_images:
                raise ObservationError(f"{key}: expected {self.image_hw[0]}x{self.image_hw[1]} pixels, got "
                                       f"{img.shape[0]}x{img.shape[1]} (the policy was trained at that size; "
                                       "pass resize_images=True to resize)")
            from foundry_action.augment import resize

            if self.image_hw[0] != self.image_hw[1]:
                raise ObservationError(f"{key}: cannot resize to the non-square training size {self.image_hw}")
            img = resize(torch.from_numpy(img).permute(2, 0, 1), self.image_hw[0]).permute(1, 2, 0).numpy()
        return img

    def observe(self, observation: Mapping[str, Any]) -> None:
        """Validate and append one control step's observation to the history."""
        frames, proprio, instruction = self.validate(observation)
        self._frames.append(frames)
        self._proprio.append(proprio)
        self._instruction = instruction
        self._step += 1
        self._actions = {s: a for s, a in self._actions.items() if s >= self._step - self.past}

    def record_action(self, action: np.ndarray) -> None:
        """The absolute action executed at the current step (pinned as past context later)."""
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.action_dim,):
            raise ValueError(f"record_action: expected shape ({self.action_dim},), got {action.shape}")
        if self._step < 0:
            raise ValueError("record_action before the first observation")
        self._actions[self._step] = action

    # ------------------------------------------------------------------ inference
    def _normalize(self, x: np.ndarray, kind: str) -> np.ndarray:
        """Normalize proprio [..., P] or a whole action window [window, A] (per position if trained so)."""
        window = kind == "action" and self.per_timestep
        out, col = [], 0
        for name in self.spec[f"{kind}_fields"]:
            d = int(self.spec["field_dims"][name])
            part = x[..., col : col + d]
            out.append(self.stats.normalize_window(name, part) if window else self.stats.normalize(name, part))
            col += d
        return np.concatenate(out, axis=-1).astype(np.float32)

    def _unnormalize(self, x: np.ndarray) -> np.ndarray:
        """Inverse of ``_normalize`` for an action window [window, A]."""
        out, col = [], 0
        for name in self.spec["action_fields"]:
            d = int(self.spec["field_dims"][name])
            part = x[..., col : col + d]
            out.append(self.stats.unnormalize_window(name, part) if self.per_timestep else self.stats.unnormalize(name, part))
            col += d
        return np.concatenate(out, axis=-1).astype(np.float32)

    def batch(self) -> dict[str, Any]:
        """The robot batch (B = 1) the model sees for the current history."""
        if self._step < 0:
            raise ValueError("plan() before the first observation: call act(obs) or observe(obs) first")
        n = len(self._frames)
        slots = [self._frames[max(0, n - 1 + o)][cam] for o in self.offsets for cam in self.cameras]
        images = torch.from_numpy(np.stack(slots)).permute(0, 3, 1, 2)[None]  # [1, N, 3, H, W]
        proprio = np.stack([self._proprio[max(0, n - 1 - self.past + i)] for i in range(self.past + 1)])
        window = self.past + 1 + self.future
        actions = np.zeros((window, self.action_dim), dtype=np.float32)
        past_mask = np.zeros(window, dtype=bool)
        for i in range(self.past):
            recorded = self._actions.get(self._step - self.past + i)
            if recorded is not None:
                actions[i] = recorded
                past_mask[i] = True
        if self.relative:  # the training windows hold actions in the frame of the anchor pose
            actions = absolute_to_relative(actions, self._proprio[-1])
        actions = np.where(past_mask[:, None], self._normalize(actions, "action"), 0.0).astype(np.float32)
        future_mask = np.arange(window) >= self.past
        dev = self.device
        return {
            "modality": "robot",
            "images": images.to(dev),
            "image_mask": torch.tensor([[n - 1 + o >= 0 for o in self.offsets for _ in self.cameras]], device=dev),
            "proprio": torch.from_numpy(self._normalize(proprio, "proprio"))[None].to(dev),
            "actions": torch.from_numpy(actions)[None].to(dev),
            "past_mask": torch.from_numpy(past_mask)[None].to(dev),
            "future_mask": torch.from_numpy(future_mask)[None].to(dev),
            "instruction": [self._instruction],
            "task": [""],
        }

    def model_batch(self) -> dict[str, Any]:
        """``batch()`` plus this episode's noise generator (when seeded): what ``plan`` feeds the model."""
        batch = self.batch()
        if self._generator is not None:
            batch["noise_generators"] = [self._generator]
        return batch

    def chunk_from_prediction(self, prediction: torch.Tensor) -> np.ndarray:
        """The model's normalized output [T, A] for this policy -> absolute chunk float32 [1 + future, A]."""
        chunk = self._unnormalize(prediction.float().cpu().numpy())[self.past :]
        if self.relative:
            chunk = relative_to_absolute(chunk, self._proprio[-1])
        return chunk

    @torch.no_grad()
    def plan(self) -> np.ndarray:
        """Absolute action chunk float32 [1 + future, A] for the current step (anchor first)."""
        return self.chunk_from_prediction(self.model.predict(self.model_batch(), **self.sample_kw)[0])

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Observe one step and return the absolute chunk float32 [1 + future, A]."""
        self.observe(observation)
        return self.plan()


@torch.no_grad()
def plan_batch(policies: list[Policy]) -> list[np.ndarray]:
    """``[p.plan() for p in policies]`` in one forward pass (policies sharing one model, e.g. clones).

    Rows are concatenated along the batch dimension; seeded policies bring their own noise
    generators, so every policy gets the chunk it would get alone (up to float rounding of batched
    kernels). Unseeded policies draw from the global RNG, which batching cannot make per-policy.
    """
    if not policies:
        return []
    first = policies[0]
    if any(p.model is not first.model or p.sample_kw != first.sample_kw for p in policies):
        raise ValueError("plan_batch: every policy must share one model and one set of sampling options")
    batches = [p.model_batch() for p in policies]
    if len(batches) == 1:
        merged = batches[0]
    else:
        if any(("noise_generators" in b) != ("noise_generators" in batches[0]) for b in batches):
            raise ValueError("plan_batch: seed every policy (reset(seed)) or none of them")
        merged = {}
        for key, value in batches[0].items():
            if isinstance(value, torch.Tensor):
                merged[key] = torch.cat([b[key] for b in batches])
            elif isinstance(value, list):
                merged[key] = [item for b in batches for item in b[key]]
            else:
                merged[key] = value
    out = first.model.predict(merged, **first.sample_kw)
    return [p.chunk_from_prediction(out[i]) for i, p in enumerate(policies)]


def chunk_latency_ms(policy: Policy, observation: Mapping[str, Any], repeats: int) -> list[float]:
    """Wall-clock ms of ``repeats`` calls of ``act`` (for benchmarks)."""
    import time

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.act(observation)
        if policy.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return times
