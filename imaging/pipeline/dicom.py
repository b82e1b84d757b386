"""DICOM ultrasound and VL photographs: read, check the header against the
pixel data before decoding anything, decode with pydicom's handlers
(pylibjpeg for JPEG, JPEG-LS, JPEG 2000, RLE), and report the facts readers
and the AI need (geometry, photometric interpretation, pixel size in mm).
"""

from __future__ import annotations

import contextlib
import io
import struct
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space, get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID

from imaging.pipeline.errors import Rejected

ULTRASOUND_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
}
PHOTOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (photographs exported from colposcopes)
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
}
# Ultrasound region calibration: PhysicalUnits code 3 means centimetres.
_CENTIMETRES = 3
# Rows converted from YBR to RGB at a time (bounds the float temporaries).
_CONVERSION_ROWS = 64


@dataclass(frozen=True)
class PixelFacts:
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    photometric_interpretation: str
    bits_allocated: int
    bits_stored: int
    transfer_syntax: str
    pixel_spacing_mm: tuple[float, float] | None  # (row spacing, column spacing)
    spacing_source: str
    modality: str
    sop_class_uid: str
    manufacturer: str
    model: str
    burned_in_annotation: str  # "YES", "NO" or "" when absent


# What pydicom raises for a damaged file, while parsing or while converting
# an element's bytes to its value.
DAMAGED_FILE_ERRORS = (
    EOFError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    OverflowError,
    NotImplementedError,
    UnicodeError,
    struct.error,
    BytesLengthException,
)


def read(data: bytes) -> Dataset:
    """The parsed file with every element converted now: pydicom converts
    lazily, and a damaged element must be found here, not half-way through
    de-identification."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=False)
        for _element in dataset.file_meta.iterall():
            pass
        for _element in dataset.iterall():
            pass
    except InvalidDicomError as error:
        raise Rejected(f"Not a valid DICOM file: {error}.") from error
    except DAMAGED_FILE_ERRORS as error:
        raise Rejected(f"The DICOM file is truncated or corrupt: {error}.") from error
    if "PixelData" not in dataset or not dataset.PixelData:
        raise Rejected("The DICOM file holds no image (no Pixel Data).")
    return dataset


def _integer(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    try:
        value = dataset.get(keyword, default)
        if value is None or value == "":
            if default is None:
                raise Rejected(f"The DICOM header lacks {keyword}.")
            return default
        return int(value)
    except (TypeError, ValueError) as error:
        raise Rejected(f"The DICOM header value of {keyword} is invalid ({dataset.get(keyword)!r}).") from error


def _spacing(dataset: Dataset) -> tuple[tuple[float, float] | None, str]:
    try:
        if "PixelSpacing" in dataset and len(dataset.PixelSpacing) == 2:
            row, column = (float(v) for v in dataset.PixelSpacing)
            if row > 0 and column > 0:
                return (row, column), "Pixel Spacing"
        regions = dataset.get("SequenceOfUltrasoundRegions") or []
        calibrated = [
            region
            for region in regions
            if region.get("PhysicalUnitsXDirection") == _CENTIMETRES
            and region.get("PhysicalUnitsYDirection") == _CENTIMETRES
            and float(region.get("PhysicalDeltaX", 0) or 0) > 0
            and float(region.get("PhysicalDeltaY", 0) or 0) > 0
        ]
        if calibrated:
            # The largest calibrated region is the image; small ones are
            # Doppler strips or inserts.
            def area(region: Dataset) -> int:
                return int(region.RegionLocationMaxX1 - region.RegionLocationMinX0) * int(
                    region.RegionLocationMaxY1 - region.RegionLocationMinY0
                )

            region = max(calibrated, key=area)
            return (
                float(region.PhysicalDeltaY) * 10,
                float(region.PhysicalDeltaX) * 10,
            ), "Ultrasound region calibration"
    except (TypeError, ValueError, AttributeError):
        return None, ""
    return None, ""


def facts(dataset: Dataset, *, max_pixels: int) -> PixelFacts:
    """Header facts, checked for consistency with the pixel data before any
    decoding (the decompression-bomb and truncation guards)."""
    rows = _integer(dataset, "Rows")
    columns = _integer(dataset, "Columns")
    frames = _integer(dataset, "NumberOfFrames", 1)
    samples = _integer(dataset, "SamplesPerPixel", 1)
    bits_allocated = _integer(dataset, "BitsAllocated")
    bits_stored = _integer(dataset, "BitsStored", bits_allocated)
    if min(rows, columns, frames, samples) < 1 or bits_allocated not in (1, 8, 16, 32):
        raise Rejected("The DICOM header describes an image with no pixels or an unsupported bit depth.")
    if rows * columns * frames > max_pixels:
        raise Rejected(
            f"The image is {columns} × {rows} pixels × {frames} frame(s), over the limit of "
            f"{max_pixels:,} pixels (a decompression-bomb guard)."
        )
    transfer_syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ""))
    if not transfer_syntax.is_transfer_syntax:
        raise Rejected(f"Unknown transfer syntax {str(transfer_syntax)!r}.")
    if not transfer_syntax.is_encapsulated:
        expected = (rows * columns * frames * samples * bits_allocated + 7) // 8
        actual = len(dataset.PixelData)
        if actual < expected:
            raise Rejected(
                f"The pixel data are shorter than the header says ({actual:,} bytes for {expected:,}): "
                "the file is truncated or corrupt."
            )
        if actual > expected + 1:
            raise Rejected(
                f"The pixel data are longer than the header says ({actual:,} bytes for {expected:,}): "
                "rows, columns or frames disagree with the data."
            )
    spacing, source = _spacing(dataset)
    return PixelFacts(
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=samples,
        photometric_interpretation=str(dataset.get("PhotometricInterpretation", "")),
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        transfer_syntax=transfer_syntax.name,
        pixel_spacing_mm=spacing,
        spacing_source=source,
        modality=str(dataset.get("Modality", "")),
        sop_class_uid=str(dataset.get("SOPClassUID", "")),
        manufacturer=str(dataset.get("Manufacturer", ""))[:64],
        model=str(dataset.get("ManufacturerModelName", ""))[:64],
        burned_in_annotation=str(dataset.get("BurnedInAnnotation", "")).upper(),
    )


def _ybr_to_rgb_in_place(array: np.ndarray, photometric: str) -> np.ndarray:
    """YBR → RGB a band of rows at a time, written back into `array`:
    pydicom's conversion of the whole array at once works in float32 with
    temporaries, about nine times the decoded size for a cine loop."""
    if not array.flags.writeable:
        array = array.copy()
    frames = array if array.ndim == 4 else array[np.newaxis]
    for frame in frames:
        for start in range(0, frame.shape[0], _CONVERSION_ROWS):
            band = frame[start : start + _CONVERSION_ROWS]
            band[...] = convert_color_space(band, photometric, "RGB")
    return array


def decode(dataset: Dataset) -> np.ndarray:
    """All frames as frames × rows × columns (× 3), colour converted to RGB;
    raises Rejected when the pixel data do not decode."""
    try:
        options = as_pixel_options(dataset, as_rgb=False)
        decoder = get_decoder(dataset.file_meta.TransferSyntaxUID)
        array, decoded = decoder.as_array(dataset, validate=True, **options)
        photometric = str(decoded.get("photometric_interpretation", ""))
        if photometric in ("YBR_FULL", "YBR_FULL_422") and int(decoded.get("samples_per_pixel", 1)) == 3:
            array = _ybr_to_rgb_in_place(array, photometric)
    except Exception as error:
        raise Rejected(f"The pixel data do not decode: {error}.") from error
    frames = _integer(dataset, "NumberOfFrames", 1)
    if frames == 1:
        array = array[np.newaxis, ...]
    return array


def to_display(dataset: Dataset, frames: np.ndarray) -> np.ndarray:
    """8-bit frames for previews and viewers: palette colour → RGB,
    monochrome windowed (VOI LUT or window centre/width, else min–max), and
    MONOCHROME1 inverted."""
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        coloured = apply_color_lut(frames, dataset)
        return _to_uint8(coloured, float(coloured.min()), float(coloured.max()))
    if frames.ndim == 4:  # already RGB
        return frames if frames.dtype == np.uint8 else _to_uint8(frames, 0, float(frames.max()))
    values = apply_modality_lut(frames, dataset)
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        # A malformed VOI LUT falls back to min–max windowing below.
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            values = apply_voi_lut(values, dataset)
    display = _to_uint8(values, float(np.min(values)), float(np.max(values)))
    if photometric == "MONOCHROME1":
        display = 255 - display
    return display


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)
