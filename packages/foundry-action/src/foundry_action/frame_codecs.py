"""Camera-frame encodings of the episode store: ``lossless`` (default) or per-frame ``jpeg``.

A store records its encoding in the root attribute ``frames`` (``{"encoding": "jpeg", "quality": 90}``;
absent = lossless) and in each camera array's codec list, so every reader (``EpisodeStore.read``, the
fast ``FrameReader``, plain ``zarr.open`` once this module is imported or through the ``zarr.codecs``
entry point) decodes transparently. JPEG frames are the Zarr v3 array->bytes codec ``foundry.jpeg``
(Pillow, which bundles libjpeg-turbo; Pillow is already a dependency, and neither numcodecs nor zarr
ships a JPEG codec) followed by zarr's standard ``crc32c`` codec: a JPEG decoder accepts many damaged
streams without complaint (a truncated scan becomes grey rows, a flipped bit a smeared block), so the
checksum is what turns every corrupt or truncated chunk into an error instead of a wrong frame.
Test: ``uv run pytest packages/foundry-action/tests/test_action_store_jpeg.py``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from foundry_core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

FRAME_ENCODINGS = ("lossless", "jpeg")
FRAMES_ATTR = "frames"
JPEG_CODEC_NAME = "foundry.jpeg"
DEFAULT_JPEG_QUALITY = 90


@dataclass(frozen=True)
class FrameEncoding:
    """How a store keeps camera frames: ``lossless`` (Blosc-LZ4/zstd) or ``jpeg`` at ``quality`` (1..100)."""

    encoding: str = "lossless"
    quality: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self.encoding, self.quality)
        if problem:
            raise ConfigError(f"frames: {problem}")

    @classmethod
    def parse(cls, encoding: str, quality: int | None = None, *, where: str = "frames") -> FrameEncoding:
        """Validate a user's choice (config or CLI; JPEG quality defaults to 90); one ConfigError naming ``where``."""
        if encoding == "jpeg" and quality is None:
            quality = DEFAULT_JPEG_QUALITY
        problem = _problem(encoding, quality)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        return cls(encoding, quality)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], path: Any) -> FrameEncoding:
        """The encoding a store records (stores without the attribute are lossless)."""
        raw = attrs.get(FRAMES_ATTR)
        if raw is None:
            return cls("lossless")
        try:
            return cls.parse(raw["encoding"], raw.get("quality"))
        except (ConfigError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: store attribute {FRAMES_ATTR!r} = {raw!r} is not a frame encoding this "
                f"Foundry reads ({exc})"
            ) from exc

    def to_attr(self) -> dict[str, Any]:
        return (
            {"encoding": self.encoding}
            if self.quality is None
            else {"encoding": self.encoding, "quality": self.quality}
        )

    def __str__(self) -> str:
        return self.encoding if self.quality is None else f"{self.encoding} (quality {self.quality})"


def _problem(encoding: str, quality: Any) -> str | None:
    """What is wrong with an (encoding, quality) pair, naming the valid values; None when it is valid."""
    if encoding not in FRAME_ENCODINGS:
        return f"unknown frame encoding {encoding!r} (choose one of {', '.join(FRAME_ENCODINGS)})"
    if encoding == "lossless" and quality is not None:
        return f"a JPEG quality ({quality}) was given for lossless frames; use jpeg or drop it"
    if encoding == "jpeg" and (
        isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100
    ):
        return f"JPEG quality must be an integer in 1..100, got {quality!r}"
    return None


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """One uint8 [H, W, 3] frame as a baseline JPEG (4:2:0, as the reference WebDataset samples)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame), "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 [H, W, 3] from JPEG bytes; ValueError when they do not decode to exactly ``shape``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw), formats=["JPEG"]) as im:
            im.load()  # Pillow refuses a truncated stream here (LOAD_TRUNCATED_IMAGES is off)
            if im.mode != "RGB":
                im = im.convert("RGB")
            frame = np.asarray(im)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable JPEG ({type(exc).__name__}: {exc})") from exc
    if frame.shape != tuple(shape):
        raise ValueError(f"JPEG decodes to {frame.shape}, the array holds {tuple(shape)} frames")
    return frame


def check_crc32c(raw: bytes) -> bytes:
    """The payload of a chunk written with zarr's ``crc32c`` codec (4-byte little-endian trailer); ValueError if damaged."""
    import google_crc32c

    if len(raw) < 4:
        raise ValueError(f"chunk has {len(raw)} bytes, shorter than its checksum")
    payload = raw[:-4]
    if google_crc32c.value(payload) != int.from_bytes(raw[-4:], "little"):
        raise ValueError("checksum mismatch: the chunk is corrupt or truncated")
    return payload


def _jpeg_codec_class() -> type:
    """The zarr codec class, built on first use so importing this module does not import zarr."""
    global _JPEG_CODEC
    if _JPEG_CODEC is not None:
        return _JPEG_CODEC
    from dataclasses import dataclass as _dc

    from zarr.abc.codec import ArrayBytesCodec
    from zarr.core.common import parse_named_configuration

    @_dc(frozen=True)
    class JpegCodec(ArrayBytesCodec):
        """Zarr v3 array->bytes codec: one uint8 (1, H, W, 3) chunk <-> one JPEG image."""

        is_fixed_size = False
        quality: int = DEFAULT_JPEG_QUALITY

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> JpegCodec:
            _, config = parse_named_configuration(data, JPEG_CODEC_NAME, require_configuration=False)
            return cls(quality=int((config or {}).get("quality", DEFAULT_JPEG_QUALITY)))

        def to_dict(self) -> dict[str, Any]:
            return {"name": JPEG_CODEC_NAME, "configuration": {"quality": self.quality}}

        def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
            chunks = tuple(getattr(chunk_grid, "chunk_shape", ()))
            if (
                np.dtype(dtype.to_native_dtype()) != np.uint8
                or len(shape) != 4
                or shape[-1] != 3
                or chunks[:1] != (1,)
            ):
                raise ValueError(
                    f"{JPEG_CODEC_NAME} encodes uint8 (T, H, W, 3) arrays with one frame per chunk, "
                    f"got shape {shape} dtype {dtype} chunks {chunks}"
                )

        async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
            frame = decode_jpeg(chunk_bytes.to_bytes(), chunk_spec.shape[1:])
            return chunk_spec.prototype.nd_buffer.from_ndarray_like(frame[None])

        async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
            frame = np.asarray(chunk_array.as_ndarray_like()).reshape(chunk_spec.shape[1:])
            data = np.frombuffer(encode_jpeg(frame, self.quality), dtype=np.uint8)
            return chunk_spec.prototype.buffer.from_array_like(data)

        def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
            # zarr's contract for variable-size codecs (as its compressors and vlen codecs do); only sharding asks
            raise NotImplementedError(f"{JPEG_CODEC_NAME} output size depends on the image")

    JpegCodec.__module__ = __name__
    JpegCodec.__qualname__ = "JpegCodec"
    _JPEG_CODEC = JpegCodec
    return JpegCodec


_JPEG_CODEC: type | None = None


def register_zarr_codecs() -> None:
    """Make ``foundry.jpeg`` known to zarr in this process (idempotent; the store calls it before opening)."""
    from zarr.registry import register_codec

    register_codec(JPEG_CODEC_NAME, _jpeg_codec_class())


def __getattr__(
    name: str,
) -> Any:  # PEP 562: ``foundry_action.frame_codecs:JpegCodec`` for zarr's entry point
    if name == "JpegCodec":
        return _jpeg_codec_class()
    raise AttributeError(name)


def camera_codecs(encoding: FrameEncoding, lossless: list[Any]) -> dict[str, Any]:
    """``create_array`` codec arguments of a camera array: JPEG + crc32c, or bytes + the lossless compressor."""
    if encoding.encoding == "jpeg":
        from zarr.codecs import Crc32cCodec

        return {"serializer": _jpeg_codec_class()(quality=encoding.quality), "compressors": [Crc32cCodec()]}
    return {"compressors": lossless}


def is_jpeg_array(array: Any) -> bool:
    """True when a camera array's codecs are ``foundry.jpeg`` + ``crc32c`` (what the writer creates)."""
    from zarr.codecs import Crc32cCodec

    codecs = tuple(array.metadata.codecs)
    return (
        len(codecs) == 2 and isinstance(codecs[0], _jpeg_codec_class()) and isinstance(codecs[1], Crc32cCodec)
    )
