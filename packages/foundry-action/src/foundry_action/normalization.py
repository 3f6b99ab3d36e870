"""Normalization statistics of an episode store: mergeable moments + t-digests, one binary file.

Per field and channel: count, mean, std (Chan/Welford merge of M2), min, max and quantiles from a
t-digest (``fastdigest``); optionally the same per window position (``window=(past, future)``: the
position ``k`` covers the values ``k`` steps after an anchor, for every anchor with that step inside
the episode). Everything, digests included, is stored in ``<dir>/norm_stats.safetensors`` (a few kB
per field, not megabytes of JSON); a small JSON header inside the file holds field dims, the default
method and the source store's fingerprint.

Methods map to [-1, 1]: ``std`` ((x - mean) / std), ``min_max``, ``percentile_1_99``,
``percentile_5_95`` (the quantile range maps to [-1, 1]; values outside are not clipped, so
``unnormalize`` is an exact inverse). Channels whose scale is below ``EPS`` are only centred.
``normalize_window`` applies the per-position statistics to a whole action window (what
``zarr_episodes`` does with ``per_timestep_stats``); ``relative_action_stats`` computes them for actions
expressed in the anchor pose's frame (``relative_actions``), where the spread grows with the position.
Test: ``uv run pytest packages/foundry-action/tests/test_action_stats.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from foundry_core.errors import DataError

if TYPE_CHECKING:
    from foundry_action.store import EpisodeStore

log = logging.getLogger(__name__)
FILENAME = "norm_stats.safetensors"
QUANTILES = (0.01, 0.02, 0.05, 0.5, 0.95, 0.98, 0.99)
METHODS = ("std", "min_max", "percentile_1_99", "percentile_5_95")
EPS = 1e-4
DIGEST_CENTROIDS = 200
STATS_VERSION = 1


def _digest(values: np.ndarray | None = None) -> Any:
    import fastdigest

    d = fastdigest.TDigest(max_centroids=DIGEST_CENTROIDS)
    if values is not None and len(values):
        d.batch_update(np.asarray(values, dtype=np.float64))
    return d


@dataclass
class Moments:
    """Mergeable per-channel statistics of one field (or one window position of it)."""

    count: float = 0.0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max: np.ndarray = field(default_factory=lambda: np.zeros(0))
    digests: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Statistics of ``x`` [N, C]."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return cls(0.0, np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.full(x.shape[1], np.inf),
                       np.full(x.shape[1], -np.inf), [_digest() for _ in range(x.shape[1])])
        mean = x.mean(0)
        return cls(float(len(x)), mean, ((x - mean) ** 2).sum(0), x.min(0), x.max(0), [_digest(c) for c in x.T])

    def merge(self, other: Moments) -> Moments:
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / n
        digests = [a.merge(b) for a, b in zip(self.digests, other.digests)]
        return Moments(n, mean, m2, np.minimum(self.min, other.min), np.maximum(self.max, other.max), digests)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1.0))

    def quantiles(self, levels: Iterable[float] = QUANTILES) -> np.ndarray:
        """[Q, C] quantiles from the digests."""
        levels = list(levels)
        return np.array([[d.quantile(q) if not d.is_empty() else 0.0 for d in self.digests] for q in levels]).reshape(
            len(levels), len(self.digests)
        )


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1)


def _affine_of(m: Moments, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) float32 mapping the statistics ``m`` to [-1, 1] with ``method``."""
    if method == "std":
        offset, half = m.mean, m.std
    elif method == "min_max":
        offset, half = (m.max + m.min) / 2, (m.max - m.min) / 2
    elif method in ("percentile_1_99", "percentile_5_95"):
        lo_q, hi_q = (0.01, 0.99) if method == "percentile_1_99" else (0.05, 0.95)
        q = m.quantiles((lo_q, hi_q))
        offset, half = (q[1] + q[0]) / 2, (q[1] - q[0]) / 2
    else:
        raise DataError(f"unknown normalization {method!r} (one of {', '.join(METHODS)})")
    scale = np.where(half < EPS, 1.0, half)
    return offset.astype(np.float32), scale.astype(np.float32)


def _like(pair: tuple[np.ndarray, np.ndarray], x: Any) -> tuple[Any, Any]:
    """``pair`` as arrays of ``x``'s kind (numpy or torch), dtype and device."""
    if isinstance(x, np.ndarray):
        return pair[0].astype(x.dtype, copy=False), pair[1].astype(x.dtype, copy=False)
    import torch

    if isinstance(x, torch.Tensor):
        return tuple(torch.as_tensor(p, dtype=x.dtype, device=x.device) for p in pair)  # type: ignore[return-value]
    raise TypeError(f"normalize expects a numpy array or torch tensor, got {type(x).__name__}")


class NormStats:
    """Statistics per field; ``normalize``/``unnormalize`` work on numpy arrays and torch tensors.

    Attributes:
        dims: field -> per-step shape (as in the store).
        method: default normalization method (one of ``METHODS``).
        window: (past, future) when per-position statistics were computed, else None.
        source: fingerprint of the store the stats came from (path, episodes, steps).
    """

    def __init__(
        self,
        moments: Mapping[str, Moments],
        dims: Mapping[str, tuple[int, ...]],
        *,
        method: str = "std",
        per_timestep: Mapping[str, list[Moments]] | None = None,
        window: tuple[int, int] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise DataError(f"unknown normalization {method!r} (one of {', '.join(METHODS)})")
        self.moments = dict(moments)
        self.dims = {k: tuple(v) for k, v in dims.items()}
        self.method = method
        self.per_timestep = dict(per_timestep or {})
        self.window = window
        self.source = dict(source or {})
        self._affine: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ compute / merge
    @classmethod
    def compute(
        cls,
        store: EpisodeStore,
        fields: Iterable[str] | None = None,
        *,
        window: tuple[int, int] | None = None,
        method: str = "std",
    ) -> NormStats:
        """Statistics of every floating-point field (or ``fields``) over all committed steps of ``store``."""
        if fields is None:
            names = [f for f in store.fields if np.dtype(store.dtypes[f]).kind == "f"]
        else:
            names = list(fields)
        for name in names:
            if name not in store.fields:
                raise DataError(f"{store.path}: no field {name!r} to compute statistics for")
        moments: dict[str, Moments] = {}
        per_t: dict[str, list[Moments]] = {}
        for name in names:
            x = _flat(store.read(name, 0, store.num_steps))
            if len(x) and not np.isfinite(x).all():
                step = int(np.argwhere(~np.isfinite(x))[0][0])
                episode = int(np.searchsorted(store.episode_ends, step, side="right"))
                raise DataError(f"{store.path}: episode {episode}: field {name!r} has NaN/inf")
            moments[name] = Moments.of(x)
            if window is not None:
                past, future = window
                per_t[name] = []
                for k in range(-past, future + 1):
                    parts = []
                    for i in range(len(store)):
                        start, stop = store.bounds(i)
                        lo, hi = start + max(0, k), stop + min(0, k)
                        if hi > lo:
                            parts.append(x[lo:hi])
                    per_t[name].append(Moments.of(np.concatenate(parts) if parts else x[:0]))
        source = {"path": str(store.path), "episodes": len(store), "steps": store.num_steps}
        return cls(moments, {n: store.fields[n] for n in names}, method=method, per_timestep=per_t,
                   window=window, source=source)

    def merge(self, other: NormStats) -> NormStats:
        """Statistics of the union of both datasets (fields and dims must match)."""
        self.check_compatible(other)
        if set(other.dims) != set(self.dims):
            raise DataError(f"cannot merge stats with fields {sorted(self.dims)} and {sorted(other.dims)}")
        per_t = {}
        if self.window == other.window and self.window is not None:
            per_t = {k: [a.merge(b) for a, b in zip(v, other.per_timestep[k])] for k, v in self.per_timestep.items()}
        return NormStats({k: m.merge(other.moments[k]) for k, m in self.moments.items()}, self.dims,
                         method=self.method, per_timestep=per_t, window=self.window if per_t else None,
                         source={"merged": [self.source, other.source]})

    def with_method(self, method: str) -> NormStats:
        return NormStats(self.moments, self.dims, method=method, per_timestep=self.per_timestep,
                         window=self.window, source=self.source)

    # ------------------------------------------------------------------ summaries
    def summary(self, name: str) -> dict[str, np.ndarray]:
        """mean/std/min/max/count and ``q01``... quantiles of a field, each [C]."""
        m = self._get(name)
        out = {"mean": m.mean, "std": m.std, "min": m.min, "max": m.max, "count": np.array(m.count)}
        for q, row in zip(QUANTILES, m.quantiles()):
            out[f"q{round(q * 100):02d}"] = row
        return out

    def _get(self, name: str) -> Moments:
        if name not in self.moments:
            raise DataError(f"no normalization statistics for field {name!r} (have {', '.join(self.moments)})")
        return self.moments[name]

    # ------------------------------------------------------------------ normalization
    def affine(self, name: str, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) float32 [C] with ``normalized = (x - offset) / scale``."""
        method = method or self.method
        key = (name, method)
        if key not in self._affine:
            self._affine[key] = _affine_of(self._get(name), method)
        return self._affine[key]

    def window_affine(self, name: str, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) float32 [past + 1 + future, C] from the per-position statistics.

        A position without data (an episode set shorter than the window) falls back to the field's
        overall statistics, so the affine map is always defined.
        """
        if self.window is None or name not in self.per_timestep:
            raise DataError(f"no per-timestep statistics for field {name!r} (compute them with a window)")
        method = method or self.method
        key = (f"{name}@window", method)
        if key not in self._affine:
            rows = [_affine_of(m, method) if m.count else self.affine(name, method) for m in self.per_timestep[name]]
            self._affine[key] = (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))
        return self._affine[key]

    def normalize_window(self, name: str, x: Any, method: str | None = None) -> Any:
        """Normalize a window ``x`` [..., past + 1 + future, C] position by position."""
        offset, scale = self._cast_window(self.window_affine(name, method), x, name)
        return (x - offset) / scale

    def unnormalize_window(self, name: str, x: Any, method: str | None = None) -> Any:
        """Inverse of :meth:`normalize_window`."""
        offset, scale = self._cast_window(self.window_affine(name, method), x, name)
        return x * scale + offset

    def _cast_window(self, pair: tuple[np.ndarray, np.ndarray], x: Any, name: str) -> tuple[Any, Any]:
        if tuple(x.shape[-2:]) != pair[0].shape:
            raise DataError(f"field {name!r}: window of shape {tuple(x.shape[-2:])}, per-timestep statistics "
                            f"have {pair[0].shape} (positions, channels)")
        return _like(pair, x)

    def normalize(self, name: str, x: Any, method: str | None = None) -> Any:
        """Normalize ``x`` [..., C] (numpy or torch) of field ``name``."""
        offset, scale = self._cast(self.affine(name, method), x, name)
        return (x - offset) / scale

    def unnormalize(self, name: str, x: Any, method: str | None = None) -> Any:
        """Inverse of :meth:`normalize`."""
        offset, scale = self._cast(self.affine(name, method), x, name)
        return x * scale + offset

    def _cast(self, pair: tuple[np.ndarray, np.ndarray], x: Any, name: str) -> tuple[Any, Any]:
        dim = len(pair[0])
        if x.shape[-1] != dim:
            raise DataError(f"field {name!r}: got last dim {x.shape[-1]}, statistics have {dim} channels")
        return _like(pair, x)

    # ------------------------------------------------------------------ compatibility
    def check_compatible(self, other: NormStats | EpisodeStore | Mapping[str, Any], fields: Iterable[str] = ()) -> None:
        """Raise DataError unless every stats field exists in ``other`` with the same dims.

        ``other`` is another NormStats, an EpisodeStore or a mapping field -> shape. ``fields`` must
        additionally be present in these stats.
        """
        if isinstance(other, NormStats):
            theirs, label = other.dims, f"stats from {other.source.get('path', '?')}"
        elif isinstance(other, Mapping):
            theirs, label = {k: tuple(v) for k, v in other.items()}, "the data"
        else:
            theirs, label = other.fields, f"store {other.path}"
        mine = f"stats from {self.source.get('path', '?')}"
        for name in fields:
            if name not in self.dims:
                raise DataError(f"{mine} have no field {name!r} (fields: {', '.join(self.dims)})")
        for name, dims in self.dims.items():
            if name not in theirs:
                raise DataError(f"{mine} have field {name!r} {dims} which {label} lacks (has {', '.join(theirs)})")
            if tuple(theirs[name]) != tuple(dims):
                raise DataError(f"{mine}: field {name!r} has dims {dims} but {label} has {tuple(theirs[name])}")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/norm_stats.safetensors`` (moments, quantiles, digests, JSON header)."""
        from safetensors.numpy import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        for name, m in self.moments.items():
            _put(tensors, name, m)
            for k, mk in enumerate(self.per_timestep.get(name, [])):
                _put(tensors, f"{name}@t{k}", mk)
        header = {"version": STATS_VERSION, "dims": {k: list(v) for k, v in self.dims.items()}, "method": self.method,
                  "window": list(self.window) if self.window else None, "source": self.source,
                  "quantiles": list(QUANTILES)}
        path = directory / FILENAME
        tmp = path.with_suffix(".partial")
        # Python writes the bytes, so a read-only or full folder is an OSError naming the file (safetensors'
        # own writer raises an opaque SafetensorError)
        tmp.write_bytes(save(tensors, metadata={"foundry_norm_stats": json.dumps(header)}))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> NormStats:
        """Read stats written by :meth:`save` (``directory`` or the file itself)."""
        from safetensors import safe_open

        path = Path(directory)
        if path.is_dir():
            path = path / FILENAME
        if not path.exists():
            raise DataError(f"no normalization statistics at {path}")
        try:
            with safe_open(str(path), framework="numpy") as f:
                header = json.loads((f.metadata() or {})["foundry_norm_stats"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (KeyError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a normalization statistics file: {exc}") from exc
        if header.get("version") != STATS_VERSION:
            raise DataError(f"{path}: stats version {header.get('version')!r} is not supported")
        window = tuple(header["window"]) if header.get("window") else None
        moments, per_t = {}, {}
        for name in header["dims"]:
            moments[name] = _get_moments(tensors, name)
            if window is not None and f"{name}@t0.count" in tensors:  # relative stats: actions only
                per_t[name] = [_get_moments(tensors, f"{name}@t{k}") for k in range(window[0] + window[1] + 1)]
        return cls(moments, {k: tuple(v) for k, v in header["dims"].items()}, method=header["method"],
                   per_timestep=per_t, window=window, source=header.get("source"))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"NormStats(fields={ {k: v for k, v in self.dims.items()} }, method={self.method!r})"


def _put(tensors: dict[str, np.ndarray], key: str, m: Moments) -> None:
    blobs = [np.frombuffer(d.to_bytes(), dtype=np.uint8) for d in m.digests]
    tensors[f"{key}.count"] = np.array([m.count], dtype=np.float64)
    for attr in ("mean", "m2", "min", "max"):
        tensors[f"{key}.{attr}"] = np.asarray(getattr(m, attr), dtype=np.float64)
    tensors[f"{key}.digest"] = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)
    tensors[f"{key}.digest_ends"] = np.cumsum([len(b) for b in blobs]).astype(np.int64)


def _get_moments(tensors: Mapping[str, np.ndarray], key: str) -> Moments:
    import fastdigest

    try:
        blob, ends = tensors[f"{key}.digest"], tensors[f"{key}.digest_ends"]
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        digests = [fastdigest.TDigest.from_bytes(blob[a:b].tobytes()) for a, b in zip(starts, ends)]
        return Moments(float(tensors[f"{key}.count"][0]), *(tensors[f"{key}.{a}"] for a in ("mean", "m2", "min", "max")),
                       digests)  # type: ignore[arg-type]
    except KeyError as exc:
        raise DataError(f"normalization statistics file lacks {exc.args[0]!r}") from exc


def relative_action_stats(
    store: EpisodeStore,
    action_fields: list[str],
    proprio_fields: list[str],
    window: tuple[int, int],
    base: NormStats,
) -> NormStats:
    """Statistics of actions expressed in the frame of the anchor pose, per window position and overall.

    Over every episode of the store (so sources that select different episodes of one store normalize
    alike): for every anchor ``t`` and position ``k`` in ``[-past, future]`` inside the episode, the action at
    ``t + k`` is composed with the inverse of the proprio pose at ``t`` (``rotations.absolute_to_relative``).
    The action and proprio fields, concatenated, must both be pose arms (xyz, rot6d, gripper). Proprio
    statistics are copied from ``base``; the result records ``relative_to`` in its source.
    """
    from foundry_action.rotations import ARM_DIM, absolute_to_relative

    def concat(names: list[str]) -> np.ndarray:
        return np.concatenate([_flat(store.read(n, 0, store.num_steps)) for n in names], axis=1).astype(np.float64)

    actions, proprio = concat(action_fields), concat(proprio_fields)
    if actions.shape[1] != proprio.shape[1] or actions.shape[1] % ARM_DIM:
        raise DataError(f"{store.path}: relative actions need action and proprio fields that are both poses of "
                        f"{ARM_DIM} numbers per arm (xyz, rot6d, gripper); got {actions.shape[1]} action and "
                        f"{proprio.shape[1]} proprio numbers from {action_fields} / {proprio_fields}")
    past, future = window
    per_position: list[list[np.ndarray]] = [[] for _ in range(past + future + 1)]
    for e in range(len(store)):
        start, stop = store.bounds(e)
        n = stop - start
        for i, k in enumerate(range(-past, future + 1)):
            t = np.arange(max(0, -k), min(n, n - k))
            if len(t):
                per_position[i].append(absolute_to_relative(actions[start + t + k], proprio[start + t]))
    dims = {name: store.fields[name] for name in action_fields}
    cols = np.cumsum([0] + [int(np.prod(dims[name])) for name in action_fields])
    stacked = [np.concatenate(p) if p else np.zeros((0, actions.shape[1])) for p in per_position]
    every = np.concatenate(stacked)
    moments = {name: base.moments[name] for name in proprio_fields}
    per_t: dict[str, list[Moments]] = {}
    for j, name in enumerate(action_fields):
        per_t[name] = [Moments.of(x[:, cols[j] : cols[j + 1]]) for x in stacked]
        moments[name] = Moments.of(every[:, cols[j] : cols[j + 1]])
    dims.update({name: store.fields[name] for name in proprio_fields})
    source = {**base.source, "relative_to": list(proprio_fields), "window": [past, future]}
    return NormStats(moments, dims, method=base.method, per_timestep=per_t, window=window, source=source)


def load_store_stats(store: EpisodeStore) -> NormStats | None:
    """The stats saved beside the data (``<store>/stats``), checked against the store; None if absent."""
    path = Path(store.path) / "stats"
    if not (path / FILENAME).exists():
        return None
    stats = NormStats.load(path)
    stats.check_compatible(store)
    if stats.source.get("steps") not in (None, store.num_steps):
        log.warning("%s: stats were computed on %s steps, the store has %s (run `foundry data stats`)",
                    store.path, stats.source.get("steps"), store.num_steps)
    return stats
