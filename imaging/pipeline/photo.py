"""Colposcopy photographs (JPEG, PNG, TIFF): validated with Pillow, metadata
removed without touching the image data.

JPEG: the APP/COM segments that carry EXIF, XMP, GPS, IPTC, maker notes and
comments are dropped and the scan data copied byte for byte (re-encoding
would lose quality). PNG: only the chunks needed to draw the image are kept.
TIFF: metadata lives in the same directory as the pixels, so the first page
is stored as a lossless PNG.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imaging.pipeline.errors import Rejected
from imaging.pipeline.sniff import FileKind

# JPEG markers kept before the first scan. APP0 (JFIF), APP2 only for an ICC
# profile, APP14 (Adobe colour transform): they change how colours are drawn.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_PNG_KEPT_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs"}
# Rows of a photo compared at a time when checking the cleaned file.
_CHECK_ROWS = 256


@dataclass(frozen=True)
class CleanPhoto:
    data: bytes  # what is stored
    extension: str
    pixels: np.ndarray  # H × W × 3, uint8
    removed: list[str]  # names of what was removed (never values)


def _jpeg_keep(marker: int, payload: bytes) -> bool:
    if marker == 0xE0:
        return True
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return payload.startswith(b"Adobe")
    return not (0xE1 <= marker <= 0xEF or marker == 0xFE)


def _jpeg_segment_name(marker: int, payload: bytes) -> str:
    if marker == 0xFE:
        return "JPEG comment"
    if marker == 0xE1 and payload.startswith(b"Exif\x00"):
        return "EXIF (including GPS and maker notes)"
    if marker == 0xE1 and b"ns.adobe.com/xap" in payload[:64]:
        return "XMP"
    if marker == 0xED:
        return "IPTC / Photoshop"
    return f"APP{marker - 0xE0} segment"


def strip_jpeg(data: bytes) -> tuple[bytes, list[str]]:
    """The JPEG without metadata segments, and what was removed. The scan
    data are copied unchanged up to the end-of-image marker; anything after
    it (vendor trailers, secondary images) is dropped."""
    if not data.startswith(b"\xff\xd8"):
        raise Rejected("The JPEG file does not start with a start-of-image marker.")
    out = bytearray(b"\xff\xd8")
    removed: list[str] = []
    position = 2
    while True:
        if position + 4 > len(data) or data[position] != 0xFF:
            raise Rejected("The JPEG file is truncated or corrupt (bad segment structure).")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            out += data[position : position + 2]
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        end = position + 2 + length
        if length < 2 or end > len(data):
            raise Rejected("The JPEG file is truncated or corrupt (a segment runs past the end).")
        payload = data[position + 4 : end]
        if marker == 0xDA:  # start of scan: copy through the end-of-image marker
            end_of_image = data.find(b"\xff\xd9", end)
            if end_of_image < 0:
                raise Rejected("The JPEG file is truncated: it has no end-of-image marker.")
            if end_of_image + 2 < len(data):
                removed.append("data after the end of the image")
            out += data[position : end_of_image + 2]
            return bytes(out), removed
        if _jpeg_keep(marker, payload):
            out += data[position:end]
        else:
            removed.append(_jpeg_segment_name(marker, payload))
        position = end


def strip_png(data: bytes) -> tuple[bytes, list[str]]:
    """The PNG with only the chunks that draw the image."""
    signature = b"\x89PNG\r\n\x1a\n"
    out = bytearray(signature)
    removed: list[str] = []
    position = len(signature)
    while True:
        if position + 12 > len(data):
            raise Rejected("The PNG file is truncated: it has no end chunk.")
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            raise Rejected("The PNG file is truncated or corrupt (a chunk runs past the end).")
        if kind in _PNG_KEPT_CHUNKS:
            out += data[position:end]
        else:
            removed.append(f"PNG {kind.decode('latin-1')} chunk")
        if kind == b"IEND":
            if end < len(data):
                removed.append("data after the end of the image")
            return bytes(out), removed
        position = end


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open an image, reading only its header, and refuse oversized ones
    before any decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise Rejected(f"The image is too large to process safely ({error}).") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise Rejected(f"The image cannot be read: {error}.") from error
    width, height = image.size
    if width < 1 or height < 1:
        raise Rejected("The image has no pixels.")
    if width * height > max_pixels:
        raise Rejected(
            f"The image is {width} × {height} pixels, over the limit of {max_pixels:,} pixels "
            "(a decompression-bomb guard)."
        )
    return image


def _decoded(data: bytes, max_pixels: int) -> Image.Image:
    image = _open_checked(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            # convert() copies even when the mode already fits.
            return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise Rejected(f"The image data do not decode (truncated or corrupt): {error}.") from error


def decode_rgb(data: bytes, max_pixels: int) -> np.ndarray:
    return np.asarray(_decoded(data, max_pixels), dtype=np.uint8)


def _same_pixels(data: bytes, expected: np.ndarray, max_pixels: int) -> bool:
    """Whether `data` decodes to `expected`, compared a band of rows at a
    time so that a second full copy of a large photo is never made."""
    image = _decoded(data, max_pixels)
    if (image.height, image.width) != expected.shape[:2]:
        return False
    for top in range(0, image.height, _CHECK_ROWS):
        band = np.asarray(image.crop((0, top, image.width, min(top + _CHECK_ROWS, image.height))), dtype=np.uint8)
        if not np.array_equal(band, expected[top : top + band.shape[0]]):
            return False
    return True


def _exif_orientation(data: bytes) -> int | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            value = image.getexif().get(0x0112)
    except (OSError, SyntaxError, ValueError):
        return None
    return int(value) if isinstance(value, int) else None


def clean_photo(data: bytes, kind: FileKind, max_pixels: int) -> CleanPhoto:
    """Validate a photograph and remove its metadata. The cleaned file must
    decode to exactly the pixels of the original."""
    original = decode_rgb(data, max_pixels)
    orientation = _exif_orientation(data)
    if orientation not in (None, 1):
        # Dropping EXIF would drop the rotation a viewer applies: turn the
        # pixels instead and keep them losslessly.
        with Image.open(io.BytesIO(data)) as image:
            upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(upright).save(buffer, format="PNG")
        return CleanPhoto(buffer.getvalue(), "png", upright, ["EXIF and all other metadata (orientation applied)"])
    if kind == FileKind.JPEG:
        cleaned, removed = strip_jpeg(data)
        extension = "jpg"
    elif kind == FileKind.PNG:
        cleaned, removed = strip_png(data)
        extension = "png"
    elif kind == FileKind.TIFF:
        buffer = io.BytesIO()
        Image.fromarray(original).save(buffer, format="PNG")
        cleaned, removed, extension = buffer.getvalue(), ["TIFF tags (stored as a lossless PNG)"], "png"
    else:
        raise Rejected(f"A {kind} file is not a photograph.")
    if not _same_pixels(cleaned, original, max_pixels):
        raise Rejected("Removing the photo's metadata changed its pixels; the file is not stored.")
    return CleanPhoto(cleaned, extension, original, removed)
