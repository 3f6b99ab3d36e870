"""Zarr v3 robot-episode store: an append-only writer and a reader (spec: docs/episode_store.md).

Layout: ``data/<field>`` arrays concatenated over time, ``data/camera/<name>`` uint8 frames (one
chunk per frame: Blosc-LZ4 or zstd, or JPEG + crc32c; the root attribute ``frames`` says which, see
``foundry_action.frame_codecs``), ``meta/episode_ends`` (exclusive cumulative ends),
``meta/episode_info`` + ``meta/episode_info_ends`` (per-episode JSON), store attributes in the root.

Crash safety: an episode's data and metadata are written first, its ``episode_ends`` entry next and
the root attribute ``committed`` last (episode/step/byte counts + CRC-32s of the metadata arrays): the
commit. Readers see exactly the committed episodes and refuse a store whose committed part does not
verify (a corrupt entry never silently hides the episodes after it). Opening for append truncates only
what lies beyond the commit record, i.e. the tail of the crash it recovers from. Every chunk is written
(also all-zero ones), so a missing chunk is lost data, never an implicit fill value.
Test: ``uv run pytest packages/foundry-action/tests/test_action_store.py``.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from foundry_action.frame_codecs import (
    FRAMES_ATTR,
    FrameEncoding,
    camera_codecs,
    is_jpeg_array,
    register_zarr_codecs,
)
from foundry_action.store_commit import COMMIT_ATTR, crc32_int64, legacy_committed, verify_commit
from foundry_core.errors import DataError

if TYPE_CHECKING:
    from foundry_action.frames import FrameReader

log = logging.getLogger(__name__)

FORMAT = "foundry-episodes"
FORMAT_VERSION = 1
CAMERA_PREFIX = "camera/"
LOWDIM_CHUNK_BYTES = 1 << 20  # ~1 MB of steps per low-dim chunk
ENDS_CHUNK = 4096
IMAGE_CODECS = ("lz4", "zstd")
ALL_CHUNKS_ATTR = "all_chunks_written"  # true: every chunk exists, so a missing chunk is lost data
WRITE_ALL_CHUNKS = {"write_empty_chunks": True}  # zarr skips all-fill chunks by default


def _zarr() -> Any:
    import zarr

    register_zarr_codecs()  # JPEG camera arrays name the foundry.jpeg codec
    return zarr


def _compressor(level: int) -> list[Any]:
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=level)]


def _image_compressor(codec: str) -> list[Any]:
    """Frames: Blosc-LZ4 (decodes ~10x faster than zstd; lossless compression gains little on photos) or zstd."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)]
    return [ZstdCodec(level=3)]


def camera_key(name: str) -> str:
    return CAMERA_PREFIX + name


class EpisodeStore:
    """Read-only view of an episode store. ``len(store)`` episodes; arrays are read lazily.

    Attributes:
        fps: control rate of the recorded steps.
        fields: low-dim field name -> per-step shape (e.g. ``{"action": (10,)}``).
        dtypes: field name -> numpy dtype string.
        semantics: field name -> human description (units, frames, conventions).
        cameras: camera name -> (H, W); frames are uint8 [H, W, 3].
        attrs: all root attributes (format version, fps, fields, cameras, user extras).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise DataError(f"{self.path}: not a Zarr v3 episode store (no zarr.json)")
        zarr = _zarr()
        try:
            self._root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        except Exception as exc:  # zarr raises several types for broken metadata
            raise DataError(f"{self.path}: cannot open Zarr store: {exc}") from exc
        self.attrs: dict[str, Any] = dict(self._root.attrs)
        if self.attrs.get("format") != FORMAT:
            raise DataError(f"{self.path}: not a {FORMAT} store (format attribute {self.attrs.get('format')!r})")
        version = self.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"{self.path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        self.fps = float(self.attrs["fps"])
        specs = self.attrs["fields"]
        self.fields: dict[str, tuple[int, ...]] = {k: tuple(v["shape"]) for k, v in specs.items()}
        self.dtypes: dict[str, str] = {k: v["dtype"] for k, v in specs.items()}
        self.semantics: dict[str, str] = {k: v.get("semantics", "") for k, v in specs.items()}
        self.cameras: dict[str, tuple[int, int]] = {k: tuple(v) for k, v in self.attrs["cameras"].items()}
        self.frames = FrameEncoding.from_attrs(self.attrs, self.path)
        self._check_declared_shapes()
        raw_ends = self._read_meta("episode_ends")
        info_ends = self._read_meta("episode_info_ends")
        lengths = {k: self._root[f"data/{k}"].shape[0] for k in self.keys()}
        commit = self.attrs.get(COMMIT_ATTR)
        if commit is None:
            n = legacy_committed(self.path, raw_ends, min(lengths.values()) if lengths else 0)
            if len(info_ends) < n:
                raise DataError(f"{self.path}: meta/episode_info_ends has {len(info_ends)} entries for {n} episodes")
        else:
            n = verify_commit(self.path, commit, raw_ends, info_ends)
        self.episode_ends: np.ndarray = raw_ends[:n]
        self._info_ends = info_ends[:n]
        steps = int(self.episode_ends[-1]) if n else 0
        for key, length in lengths.items():
            if length < steps:
                raise DataError(
                    f"{self.path}: data/{key} has {length} steps but {n} committed episodes need {steps}: "
                    "chunks or array metadata were lost; restore the store from a copy or re-create it"
                )
        info_len = self._root["meta/episode_info"].shape[0]
        if n and info_len < int(self._info_ends[-1]):
            raise DataError(f"{self.path}: meta/episode_info has {info_len} bytes, the episodes need {int(self._info_ends[-1])}")
        self._info_cache: list[dict[str, Any]] | None = None

    def _read_meta(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self._root[f"meta/{name}"][:], dtype=np.int64)
        except Exception as exc:  # a corrupt chunk raises codec-specific errors
            raise DataError(f"{self.path}: meta/{name} cannot be read ({type(exc).__name__}: {exc}); the store is damaged") from exc

    def _check_declared_shapes(self) -> None:
        """Every array must have the per-step shape and dtype zarr.json declares (cheap: metadata only)."""
        for key in self.keys():
            is_cam = key.startswith(CAMERA_PREFIX)
            name = key.removeprefix(CAMERA_PREFIX)
            want_shape = (*self.cameras[name], 3) if is_cam else self.fields[key]
            want_dtype = np.dtype("uint8") if is_cam else np.dtype(self.dtypes[key])
            try:
                arr = self._root[f"data/{key}"]
            except KeyError as exc:
                raise DataError(f"{self.path}: data/{key} is declared in zarr.json but missing") from exc
            if tuple(arr.shape[1:]) != tuple(want_shape) or np.dtype(arr.dtype) != want_dtype:
                raise DataError(
                    f"{self.path}: data/{key} has per-step shape {tuple(arr.shape[1:])} and dtype {arr.dtype}, but "
                    f"zarr.json declares {tuple(want_shape)} {want_dtype}; the store is inconsistent (re-create it)"
                )
            if is_cam and is_jpeg_array(arr) != (self.frames.encoding == "jpeg"):
                raise DataError(f"{self.path}: data/{key} codecs {[c.to_dict()['name'] for c in arr.metadata.codecs]} do not "
                                f"match the store's frame encoding {self.frames}; the store is inconsistent (re-create it)")

    # ------------------------------------------------------------------ structure
    def keys(self) -> list[str]:
        """Every per-step array key: low-dim fields, then ``camera/<name>``."""
        return list(self.fields) + [camera_key(c) for c in self.cameras]

    def __len__(self) -> int:
        return len(self.episode_ends)

    @property
    def all_chunks_written(self) -> bool:
        """True for stores whose writer kept every chunk: a missing chunk is then lost data."""
        return bool(self.attrs.get(ALL_CHUNKS_ATTR, False))

    @property
    def num_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self) else 0

    def bounds(self, i: int) -> tuple[int, int]:
        """Global [start, stop) step range of episode ``i``."""
        self._check_index(i)
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return start, int(self.episode_ends[i])

    def episode_length(self, i: int) -> int:
        start, stop = self.bounds(i)
        return stop - start

    def lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends])).astype(np.int64)

    def array(self, key: str) -> Any:
        """The raw zarr array of ``key`` (may hold an uncommitted tail beyond ``num_steps``)."""
        if key not in self.fields and key.removeprefix(CAMERA_PREFIX) not in self.cameras:
            raise DataError(f"{self.path}: no field or camera {key!r} (have {', '.join(self.keys())})")
        return self._root[f"data/{key}"]

    # ------------------------------------------------------------------ reading
    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Steps [start, stop) of ``key`` (global indices)."""
        arr = self.array(key)
        try:
            return np.asarray(arr[start:stop])
        except Exception as exc:  # a corrupt chunk raises codec-specific errors
            chunk = int(arr.chunks[0])
            raise DataError(
                f"{self.path}: data/{key} steps [{start}, {stop}) (chunks {start // chunk}..{max(start, stop - 1) // chunk}) "
                f"cannot be decoded ({type(exc).__name__}: {exc}); they start at {self.locate(start)}; "
                "run `foundry data validate --full` to list damaged chunks"
            ) from exc

    def locate(self, step: int) -> str:
        """``"episode 3 frame 17"`` for global ``step`` (error messages name the episode, not the global index)."""
        i = int(np.searchsorted(self.episode_ends, step, side="right"))
        if i >= len(self):
            return f"step {step}, beyond the committed episodes"
        return f"episode {i} frame {step - (int(self.episode_ends[i - 1]) if i else 0)}"

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the given) per-step arrays of episode ``i``: ``{"action": [T, 10], "camera/scene": [T,H,W,3]}``."""
        start, stop = self.bounds(i)
        return {k: self.read(k, start, stop) for k in (self.keys() if keys is None else keys)}

    def frame_reader(self, camera: str) -> FrameReader:
        """A fast reader of ``camera``'s frames by global step index."""
        from foundry_action.frames import FrameReader

        return FrameReader(self.array(camera_key(camera)), missing_is_error=self.all_chunks_written,
                           locate=self.locate, name=f"{self.path}: camera {camera!r}")

    def meta(self, i: int) -> dict[str, Any]:
        """Per-episode metadata: ``task``, ``instructions`` (list), ``success``, ``source`` and extras."""
        return self.all_meta()[self._check_index(i)]

    def all_meta(self) -> list[dict[str, Any]]:
        if self._info_cache is None:
            n = len(self)
            try:
                blob = bytes(np.asarray(self._root["meta/episode_info"][: int(self._info_ends[-1]) if n else 0]))
            except Exception as exc:  # a corrupt chunk raises codec-specific errors
                raise DataError(f"{self.path}: meta/episode_info cannot be read ({type(exc).__name__}: {exc})") from exc
            commit = self.attrs.get(COMMIT_ATTR)
            if commit is not None and n == int(commit["episodes"]) and zlib.crc32(blob) != int(commit.get("episode_info_crc32", -1)):
                raise DataError(f"{self.path}: meta/episode_info does not match the commit record's checksum; the store is damaged")
            starts = np.concatenate([[0], self._info_ends[:-1]]) if n else []
            out = []
            for i, (a, b) in enumerate(zip(starts, self._info_ends)):
                try:
                    out.append(json.loads(blob[int(a) : int(b)].decode()))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DataError(f"{self.path}: episode {i}: corrupt metadata: {exc}") from exc
            self._info_cache = out
        return self._info_cache

    def _check_index(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range for a store of {len(self)} episodes")
        return i

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, episodes={len(self)}, steps={self.num_steps}, fps={self.fps})"


def open_store(path: str | Path) -> EpisodeStore:
    """Open an episode store for reading."""
    return EpisodeStore(path)


def is_store(path: str | Path) -> bool:
    p = Path(path) / "zarr.json"
    if not p.exists():
        return False
    try:
        return json.loads(p.read_text()).get("attributes", {}).get("format") == FORMAT
    except (OSError, json.JSONDecodeError):
        return False


class EpisodeWriter:
    """Append episodes to a store (a context manager). ``mode="w"`` creates, ``"a"`` appends (or creates).

    ``mode="w"`` needs a path that does not exist or is an empty folder: the writer never deletes
    anything (replacing a store is the caller's decision: write a new one beside it and swap, see
    ``foundry_action.ownership``). ``fields`` maps a low-dim field to its per-step shape; ``dtypes``
    (default float32) may override a field's dtype (float*, int*, bool). ``cameras`` maps a camera name
    to (H, W). ``attrs`` adds store attributes (e.g. ``{"source_format": "lerobot_v3"}``). ``frames``
    chooses the camera-frame encoding of a new store (default lossless); an append keeps the store's
    own and refuses a different explicit one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float | None = None,
        fields: Mapping[str, Iterable[int]] | None = None,
        cameras: Mapping[str, Iterable[int]] | None = None,
        semantics: Mapping[str, str] | None = None,
        dtypes: Mapping[str, str] | None = None,
        attrs: Mapping[str, Any] | None = None,
        mode: str = "a",
        compression_level: int = 3,
        image_codec: str = "lz4",
        frames: FrameEncoding | None = None,
    ) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        if image_codec not in IMAGE_CODECS:
            raise ValueError(f"image_codec must be one of {IMAGE_CODECS}, got {image_codec!r}")
        self.path = Path(path)
        self._level = compression_level
        self._image_codec = image_codec
        self.frames = frames or FrameEncoding()
        zarr = _zarr()
        if mode == "a" and (self.path / "zarr.json").exists():
            self._root = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            self._load_existing(fps, fields, cameras, dtypes, frames)
        else:
            if fps is None or fields is None:
                raise DataError(f"{self.path}: a new store needs fps and fields")
            if self.path.exists() and not (self.path.is_dir() and not any(self.path.iterdir())):
                what = "an episode store" if is_store(self.path) else "not an episode store"
                raise DataError(f"{self.path} already exists ({what}); a new store needs a new path or an empty folder")
            self._create(fps, fields, cameras or {}, semantics or {}, dtypes or {}, attrs or {})
        self._arrays = {
            name: self._root[name].with_config(WRITE_ALL_CHUNKS)
            for name in [f"data/{k}" for k in (*self.fields, *(camera_key(c) for c in self.cameras))]
            + ["meta/episode_ends", "meta/episode_info_ends", "meta/episode_info"]
        }

    # ------------------------------------------------------------------ setup
    def _create(
        self,
        fps: float,
        fields: Mapping[str, Iterable[int]],
        cameras: Mapping[str, Iterable[int]],
        semantics: Mapping[str, str],
        dtypes: Mapping[str, str],
        attrs: Mapping[str, Any],
    ) -> None:
        zarr = _zarr()
        self.fps = float(fps)
        self.fields = {k: tuple(int(d) for d in v) for k, v in fields.items()}
        self.cameras = {k: tuple(int(d) for d in v) for k, v in cameras.items()}
        for name in self.fields:
            if name == "camera" or name.startswith(CAMERA_PREFIX) or "/" in name or name.startswith("__"):
                raise DataError(f"field name {name!r} is reserved or contains '/'")
        for cam, hw in self.cameras.items():
            if len(hw) != 2 or "/" in cam:
                raise DataError(f"camera {cam!r}: expected a name without '/' and (H, W), got {hw}")
        unknown = set(semantics) - set(self.fields) - set(self.cameras)
        if unknown:
            raise DataError(f"semantics given for unknown fields {sorted(unknown)}")
        self.dtypes = {k: str(np.dtype(dtypes.get(k, "float32"))) for k in self.fields}
        if FRAMES_ATTR in attrs:
            raise DataError(f"{self.path}: attribute {FRAMES_ATTR!r} is set by the writer's frames argument, not by attrs")
        self._ends: list[int] = []
        self._info_ends: list[int] = []
        self._crcs = {"episode_ends_crc32": 0, "episode_info_ends_crc32": 0, "episode_info_crc32": 0}
        # The marker attributes are in the very first file written, so even a store interrupted while
        # being created is recognisable as ours (and the empty commit record makes it a valid store).
        root = zarr.create_group(
            str(self.path),
            zarr_format=3,
            attributes={
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "fps": self.fps,
                "fields": {
                    k: {"shape": list(v), "dtype": self.dtypes[k], "semantics": semantics.get(k, "")}
                    for k, v in self.fields.items()
                },
                "cameras": {k: list(v) for k, v in self.cameras.items()},
                "camera_semantics": {k: semantics.get(k, "") for k in self.cameras},
                FRAMES_ATTR: self.frames.to_attr(),
                ALL_CHUNKS_ATTR: True,
                COMMIT_ATTR: self._commit_record(),
                **dict(attrs),
            },
        )
        data = root.create_group("data")
        for name, shape in self.fields.items():
            itemsize = np.dtype(self.dtypes[name]).itemsize * int(np.prod(shape, dtype=np.int64))
            chunk = max(64, LOWDIM_CHUNK_BYTES // max(1, itemsize))
            data.create_array(
                name, shape=(0, *shape), dtype=self.dtypes[name], chunks=(chunk, *shape),
                compressors=_compressor(self._level),
            )
        cam_group = data.create_group("camera")
        for cam, (h, w) in self.cameras.items():
            cam_group.create_array(
                cam, shape=(0, h, w, 3), dtype="uint8", chunks=(1, h, w, 3),
                **camera_codecs(self.frames, _image_compressor(self._image_codec)),
            )
        meta = root.create_group("meta")
        meta.create_array("episode_ends", shape=(0,), dtype="int64", chunks=(ENDS_CHUNK,), fill_value=-1, compressors=None)
        meta.create_array("episode_info_ends", shape=(0,), dtype="int64", chunks=(ENDS_CHUNK,), fill_value=-1, compressors=None)
        meta.create_array("episode_info", shape=(0,), dtype="uint8", chunks=(1 << 16,), compressors=None)
        self._root = root

    def _commit_record(self) -> dict[str, int]:
        return {
            "episodes": len(self._ends),
            "steps": self._ends[-1] if self._ends else 0,
            "info_bytes": self._info_ends[-1] if self._info_ends else 0,
            **self._crcs,
        }

    def _load_existing(
        self,
        fps: float | None,
        fields: Mapping[str, Iterable[int]] | None,
        cameras: Mapping[str, Iterable[int]] | None,
        dtypes: Mapping[str, str] | None,
        frames: FrameEncoding | None,
    ) -> None:
        reader = EpisodeStore(self.path)  # validates format and the committed part (refuses a damaged store)
        if frames is not None and frames != reader.frames:
            raise DataError(f"{self.path}: store keeps frames as {reader.frames}, appending asks {frames}")
        self.frames = reader.frames  # an append keeps the store's encoding
        self.fps, self.fields, self.cameras, self.dtypes = reader.fps, reader.fields, reader.cameras, reader.dtypes
        if fps is not None and float(fps) != self.fps:
            raise DataError(f"{self.path}: store has fps {self.fps}, appending with fps {fps}")
        if fields is not None:
            want = {k: tuple(int(d) for d in v) for k, v in fields.items()}
            if want != self.fields:
                raise DataError(f"{self.path}: store fields {self.fields} differ from the writer's {want}")
        if cameras is not None:
            want_c = {k: tuple(int(d) for d in v) for k, v in cameras.items()}
            if want_c != self.cameras:
                raise DataError(f"{self.path}: store cameras {self.cameras} differ from the writer's {want_c}")
        if dtypes is not None:
            for k, v in dtypes.items():
                if k in self.dtypes and str(np.dtype(v)) != self.dtypes[k]:
                    raise DataError(f"{self.path}: field {k!r} has dtype {self.dtypes[k]}, writer asks {v}")
        self._ends = [int(x) for x in reader.episode_ends]
        self._info_ends = [int(x) for x in reader._info_ends]
        commit = reader.attrs.get(COMMIT_ATTR)
        if commit is None:  # a store written before the commit record: the verified prefix becomes the record
            info = bytes(np.asarray(self._root["meta/episode_info"][: self._info_ends[-1] if self._info_ends else 0]))
            self._crcs = {
                "episode_ends_crc32": crc32_int64(self._ends),
                "episode_info_ends_crc32": crc32_int64(self._info_ends),
                "episode_info_crc32": zlib.crc32(info),
            }
        else:
            self._crcs = {k: int(commit[k]) for k in ("episode_ends_crc32", "episode_info_ends_crc32", "episode_info_crc32")}
        self._truncate_tails(reader)
        if commit is None:
            self._root.attrs.update({COMMIT_ATTR: self._commit_record()})

    def _truncate_tails(self, reader: EpisodeStore) -> None:
        """Drop what a crashed writer left beyond the verified commit record (and nothing else)."""
        total = self._ends[-1] if self._ends else 0
        n = len(self._ends)
        dropped = []
        for key in reader.keys():
            arr = self._root[f"data/{key}"]
            if arr.shape[0] > total:
                dropped.append(f"{key}: {arr.shape[0] - total} steps")
                arr.resize((total, *arr.shape[1:]))
        info_len = self._info_ends[-1] if self._info_ends else 0
        for name, length in (("episode_ends", n), ("episode_info_ends", n), ("episode_info", info_len)):
            arr = self._root[f"meta/{name}"]
            if arr.shape[0] > length:
                dropped.append(f"meta/{name}: {arr.shape[0] - length} entries")
                arr.resize((length,))
        for partial in self.path.rglob("*.partial"):  # zarr's own temporary files (temp name + rename)
            partial.unlink()
        if dropped:
            log.warning("%s: truncated an uncommitted tail (%s)", self.path, "; ".join(dropped))

    # ------------------------------------------------------------------ writing
    def __len__(self) -> int:
        return len(self._ends)

    def check_episode(self, arrays: Mapping[str, Any], index: int | None = None) -> dict[str, np.ndarray]:
        """Validate one episode (keys, dims, dtypes, NaN/inf, length); return arrays cast to store dtypes."""
        where = f"{self.path}: episode {len(self) if index is None else index}"
        expected = set(self.fields) | {camera_key(c) for c in self.cameras}
        missing = sorted(expected - set(arrays))
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}")
        extra = sorted(set(arrays) - expected)
        if extra:
            raise DataError(f"{where}: unknown keys {', '.join(extra)} (store has {', '.join(sorted(expected))})")
        out: dict[str, np.ndarray] = {}
        length = None
        for key in sorted(expected):
            value = np.asarray(arrays[key])
            is_cam = key.startswith(CAMERA_PREFIX)
            shape = (*self.cameras[key[len(CAMERA_PREFIX) :]], 3) if is_cam else self.fields[key]
            dtype = np.dtype("uint8") if is_cam else np.dtype(self.dtypes[key])
            if value.ndim != len(shape) + 1 or tuple(value.shape[1:]) != shape:
                raise DataError(f"{where}: {key} has shape {value.shape}, expected (T, {', '.join(map(str, shape))})")
            if length is None:
                length = value.shape[0]
            elif value.shape[0] != length:
                raise DataError(f"{where}: {key} has {value.shape[0]} steps, other fields have {length}")
            if is_cam and value.dtype != np.uint8:
                raise DataError(f"{where}: {key} has dtype {value.dtype}, camera frames must be uint8")
            if dtype == np.bool_ and value.dtype != np.bool_:
                raise DataError(f"{where}: {key} has dtype {value.dtype}, expected bool")
            if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise DataError(f"{where}: {key} has dtype {value.dtype}, cannot store as {dtype}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = np.argwhere(~np.isfinite(value.reshape(len(value), -1)))[0]
                raise DataError(f"{where}: {key} has NaN/inf at step {bad[0]} channel {bad[1]}")
            out[key] = value.astype(dtype, copy=False)
        if not length:
            raise DataError(f"{where}: episode has no steps")
        return out

    def append_episode(
        self,
        arrays: Mapping[str, Any],
        *,
        task: str = "",
        instruction: str | list[str] = "",
        success: bool | None = None,
        source: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        """Validate and append one episode; return its index. It becomes visible only when complete."""
        checked = self.check_episode(arrays)
        length = len(next(iter(checked.values())))
        instructions = [instruction] if isinstance(instruction, str) else [str(s) for s in instruction]
        info = {"task": task, "instructions": instructions, "success": success, "source": source, **dict(extra or {})}
        try:
            blob = np.frombuffer(json.dumps(info, ensure_ascii=False).encode(), dtype=np.uint8)
        except TypeError as exc:
            raise DataError(f"{self.path}: episode {len(self)}: metadata is not JSON-serialisable: {exc}") from exc
        self._drop_failed_append()
        for key, value in checked.items():
            self._arrays[f"data/{key}"].append(value, axis=0)
        self._arrays["meta/episode_info"].append(blob)
        info_end = (self._info_ends[-1] if self._info_ends else 0) + len(blob)
        end = (self._ends[-1] if self._ends else 0) + length
        self._arrays["meta/episode_info_ends"].append(np.array([info_end], dtype=np.int64))
        self._arrays["meta/episode_ends"].append(np.array([end], dtype=np.int64))
        self._info_ends.append(info_end)
        self._ends.append(end)
        self._crcs = {
            "episode_ends_crc32": crc32_int64([end], self._crcs["episode_ends_crc32"]),
            "episode_info_ends_crc32": crc32_int64([info_end], self._crcs["episode_info_ends_crc32"]),
            "episode_info_crc32": zlib.crc32(blob.tobytes(), self._crcs["episode_info_crc32"]),
        }
        self._root.attrs.update({COMMIT_ATTR: self._commit_record()})  # the commit (zarr.json is replaced atomically)
        return len(self._ends) - 1

    def _drop_failed_append(self) -> None:
        """After an append that raised midway (e.g. a full disk) in this process, cut its arrays back to the commit."""
        total, info = (self._ends[-1] if self._ends else 0), (self._info_ends[-1] if self._info_ends else 0)
        for name, arr in self._arrays.items():
            length = {"meta/episode_ends": len(self._ends), "meta/episode_info_ends": len(self._ends),
                      "meta/episode_info": info}.get(name, total)
            if arr.shape[0] != length:
                arr.resize((length, *arr.shape[1:]))

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add store attributes (reserved keys cannot be changed)."""
        reserved = {"format", "format_version", "fps", "fields", "cameras", FRAMES_ATTR, COMMIT_ATTR, ALL_CHUNKS_ATTR} & set(attrs)
        if reserved:
            raise DataError(f"{self.path}: attributes {sorted(reserved)} are fixed when the store is created")
        self._root.attrs.update(dict(attrs))

    def close(self) -> None:
        """Nothing is buffered: every append is durable when it returns. Kept for the context protocol."""

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
