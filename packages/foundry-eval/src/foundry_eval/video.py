"""Rollout videos: a list of camera observations -> ``recording.mp4`` (PyAV, H.264) or ``.gif`` (imageio).

The frame of one step shows all cameras side by side. Tested by ``tests/test_eval_rollout.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

VIDEO_FORMATS = ("mp4", "gif")


def tile_cameras(images: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Cameras side by side (sorted by name), uint8 [H, sum W, 3]; None when there are no cameras."""
    frames = [np.asarray(images[name]) for name in sorted(images)]
    if not frames:
        return None
    height = max(f.shape[0] for f in frames)
    padded = [np.pad(f, ((0, height - f.shape[0]), (0, 0), (0, 0))) for f in frames]
    return np.concatenate(padded, axis=1).astype(np.uint8)


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Write uint8 [H, W, 3] frames to ``path`` (``.mp4`` or ``.gif`` by suffix); returns the path."""
    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"{path}: unknown video format {fmt!r}; expected one of {VIDEO_FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "gif":
        import imageio.v3 as iio

        iio.imwrite(path, np.stack(frames), duration=1000.0 / fps, loop=0)
        return path
    import av

    # yuv420p needs even sides
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            image = np.ascontiguousarray(np.pad(frame, pad, mode="edge"))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
