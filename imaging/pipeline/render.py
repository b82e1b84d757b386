"""Previews: a PNG of the key frame for the viewer, a thumbnail for lists,
and a strip of frames for cine loops."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PREVIEW_EDGE = 1024
THUMBNAIL_EDGE = 256
STRIP_FRAMES = 8
STRIP_HEIGHT = 96


def key_frame_index(frames: int) -> int:
    """The middle frame: a cine sweep usually passes the nodule there."""
    return frames // 2


def _png(array: np.ndarray, max_edge: int) -> bytes:
    image = Image.fromarray(array)
    image.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def preview_png(frame: np.ndarray) -> bytes:
    return _png(frame, PREVIEW_EDGE)


def thumbnail_png(frame: np.ndarray) -> bytes:
    return _png(frame, THUMBNAIL_EDGE)


def frame_strip_png(frames: np.ndarray) -> bytes | None:
    """Evenly spaced frames side by side; None for a single frame."""
    count = frames.shape[0]
    if count < 2:
        return None
    indices = np.linspace(0, count - 1, num=min(STRIP_FRAMES, count)).round().astype(int)
    tiles = []
    for index in indices:
        tile = Image.fromarray(frames[index])
        width = max(1, round(tile.width * STRIP_HEIGHT / tile.height))
        tiles.append(tile.resize((width, STRIP_HEIGHT), Image.Resampling.BILINEAR).convert("RGB"))
    strip = Image.new("RGB", (sum(t.width for t in tiles), STRIP_HEIGHT))
    offset = 0
    for tile in tiles:
        strip.paste(tile, (offset, 0))
        offset += tile.width
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue()
