"""Pixels for the reading viewer: one frame of a stored image as a PNG, and
the AI second opinion as transparent layers (contour, heat map) at the
image's size. The callers decide who may receive them (readings.selectors).

A frame PNG carries pixels only: no text chunks, no DICOM attributes. Grey
ultrasound is sent as 8-bit grey at full resolution so the viewer can
window it; colour stays RGB.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from django.conf import settings
from matplotlib import colormaps
from PIL import Image as PILImage
from scipy import ndimage

from ai_engine.models import AiResult
from ai_engine.selectors import ai_result_mask, ai_result_probability
from imaging import storage
from imaging.models import FileFormat, Image
from imaging.pipeline import dicom, photo

# Decoded frames of the last few images, per process: paging through a
# 30-frame cine loop decodes the file once.
_CACHE_SIZE = 4
_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()

CONTOUR_RGBA = (255, 221, 0, 255)


class FrameOutOfRange(ValueError):
    pass


def _frames(image: Image) -> np.ndarray:
    """frames × rows × columns (× 3), uint8, of the stored de-identified file
    (verified against its sha256)."""
    with _cache_lock:
        cached = _cache.get(image.sha256)
        if cached is not None:
            _cache.move_to_end(image.sha256)
            return cached
    data = storage.read_verified(image.file.name, image.sha256)
    if image.file_format == FileFormat.DICOM:
        dataset = dicom.read(data)
        frames = dicom.to_display(dataset, dicom.decode(dataset))
    else:
        frames = photo.decode_rgb(data, int(getattr(settings, "IMAGING_MAX_PIXELS", 150_000_000)))[np.newaxis]
    with _cache_lock:
        _cache[image.sha256] = frames
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return frames


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array, mode=mode).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def frame_png(image: Image, index: int) -> bytes:
    frames = _frames(image)
    if not 0 <= index < frames.shape[0]:
        raise FrameOutOfRange(f"Frame {index} does not exist; the image has {frames.shape[0]} frame(s).")
    return _png(np.ascontiguousarray(frames[index]))


def _fit(layer: np.ndarray, rows: int, columns: int, resample: PILImage.Resampling) -> np.ndarray:
    if layer.shape[:2] == (rows, columns):
        return layer
    return np.asarray(PILImage.fromarray(layer).resize((columns, rows), resample))


def contour_png(result: AiResult, *, rows: int, columns: int) -> bytes:
    """The outline of the AI mask, opaque yellow on transparent, at the
    image's size; about 1/300 of the image's longer edge thick."""
    mask = _fit(ai_result_mask(result) * 255, rows, columns, PILImage.Resampling.NEAREST) > 127
    thickness = max(1, round(max(rows, columns) / 300))
    inner = ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    edge = mask & ~inner
    rgba = np.zeros((rows, columns, 4), dtype=np.uint8)
    rgba[edge] = CONTOUR_RGBA
    return _png(rgba, "RGBA")


def heatmap_png(result: AiResult, *, rows: int, columns: int) -> bytes:
    """The lesion probability as a colour map whose opacity is the
    probability (below 5 % fully transparent), at the image's size."""
    probability = ai_result_probability(result).astype(np.float32)
    probability = _fit(probability, rows, columns, PILImage.Resampling.BILINEAR).astype(np.float32)
    probability = np.clip(probability, 0.0, 1.0)
    rgba = (colormaps["inferno"](probability) * 255).astype(np.uint8)
    alpha = np.where(probability < 0.05, 0, probability * 255)
    rgba[..., 3] = alpha.astype(np.uint8)
    return _png(rgba, "RGBA")
