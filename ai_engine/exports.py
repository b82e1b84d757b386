"""Outputs others can open: the AI mask as a DICOM Segmentation (for DICOM
input, opens in OHIF or 3D Slicer) and as a PNG overlay (for photographs).

The Segmentation is built with highdicom and references the de-identified
source image it was computed on, so a viewer lays it over that image.

Ultrasound specifics, decided from the real files the tests use:

* Ultrasound images usually have no Frame of Reference, Pixel Spacing or
  Image Orientation. Without a Frame of Reference highdicom builds a
  Segmentation that is "spatially aligned" with its source, pixel for pixel;
  that is exactly what our masks are, so no geometry is invented.
* highdicom refuses a multi-frame source without a Frame of Reference and
  treats Ultrasound Multi-frame as an enhanced image (it wants functional
  groups the cine files do not have). For a cine source we therefore hand
  highdicom a single-frame stand-in built from the original header (same
  SOP Instance UID, Study and Series, no pixel data), and afterwards restore
  the real SOP Class UID in the references and add the Referenced Frame
  Number of the judged frame, so the Segmentation points at that frame of
  the real cine loop.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterable

import highdicom
import numpy as np
import pydicom
from PIL import Image
from pydicom.sr.codedict import codes
from scipy import ndimage

MANUFACTURER = "Consilium"
DEVICE_SERIAL_NUMBER = "n/a"
ULTRASOUND_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
# The tag of Pixel Data: the stand-in source never needs the pixels.
PIXEL_DATA_TAG = 0x7FE00010
# Attributes that describe a cine loop and make no sense on one frame.
MULTIFRAME_KEYWORDS = (
    "NumberOfFrames",
    "FrameIncrementPointer",
    "FrameTime",
    "FrameTimeVector",
    "CineRate",
    "RecommendedDisplayFrameRate",
    "StartTrim",
    "StopTrim",
    "PreferredPlaybackSequencing",
)
VERSION_HASH_LENGTH = 16


class ExportError(ValueError):
    """The mask cannot be exported for this image (wrong size, wrong frame)."""


def dicom_segmentation(
    *,
    source: pydicom.Dataset,
    mask: np.ndarray,
    frame_index: int | None,
    model_name: str,
    model_version: str,
    model_sha256: str,
    label: str = "Lesion",
    series_number: int = 900,
    instance_number: int = 1,
) -> pydicom.Dataset:
    """A binary DICOM Segmentation of ``mask`` over ``source`` (the
    de-identified image), one segment, made by the named model.

    ``frame_index`` is the zero-based frame of a multi-frame (cine) source
    that the model judged; for a single-frame source it must be None or 0.
    """
    number_of_frames = int(source.get("NumberOfFrames", 1) or 1)
    judged_frame = _judged_frame(frame_index, number_of_frames)
    binary_mask = _binary_mask(mask, (int(source.Rows), int(source.Columns)), "the source image")
    stand_in = _single_frame_stand_in(source)

    with warnings.catch_warnings():
        # The de-identified Patient's Name is the study id (C01-0042), one
        # name component on purpose; highdicom warns about each one.
        warnings.filterwarnings(
            "ignore", message=".*unlikely to represent the intended person name", category=UserWarning
        )
        segmentation = _segmentation(
            stand_in, binary_mask, label, model_name, model_version, model_sha256, series_number, instance_number
        )
    if number_of_frames > 1:
        _point_at_cine_frame(segmentation, source, judged_frame)
    return segmentation


def _segmentation(
    stand_in: pydicom.Dataset,
    binary_mask: np.ndarray,
    label: str,
    model_name: str,
    model_version: str,
    model_sha256: str,
    series_number: int,
    instance_number: int,
) -> highdicom.seg.Segmentation:
    return highdicom.seg.Segmentation(
        source_images=[stand_in],
        pixel_array=binary_mask[np.newaxis],
        segmentation_type=highdicom.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(label, model_name, model_version, model_sha256)],
        series_instance_uid=highdicom.UID(),
        series_number=series_number,
        sop_instance_uid=highdicom.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model_name,
        software_versions=_version_text(model_version, model_sha256),
        device_serial_number=DEVICE_SERIAL_NUMBER,
        series_description=f"AI {label.lower()} segmentation",
        # An empty mask ("nothing found") is a result too: keep its frame.
        omit_empty_frames=False,
    )


def dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    """A dataset written as a DICOM file (with preamble and file meta)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def overlay_png(
    *,
    image_rgb_or_grey: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] = (255, 64, 0),
    opacity: float = 0.4,
) -> bytes:
    """PNG bytes of the image with the mask drawn on it: a translucent fill
    and an opaque contour along the inside of the mask's edge (so nothing
    outside the mask changes)."""
    if not 0.0 <= opacity <= 1.0:
        raise ExportError(f"The overlay opacity must be between 0 and 1, not {opacity}.")
    picture = _as_rgb(image_rgb_or_grey)
    height, width = picture.shape[:2]
    inside = _binary_mask(mask, (height, width), "the image")
    contour = inside & ~ndimage.binary_erosion(inside, iterations=2)

    colour_array = np.asarray(colour, dtype=np.float32)
    blended = picture.astype(np.float32)
    blended[inside] = (1.0 - opacity) * blended[inside] + opacity * colour_array
    blended[contour] = colour_array
    result = np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    buffer = io.BytesIO()
    Image.fromarray(result).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _judged_frame(frame_index: int | None, number_of_frames: int) -> int:
    """The zero-based judged frame, checked against the source."""
    if number_of_frames == 1:
        if frame_index not in (None, 0):
            raise ExportError(f"The source image has a single frame; frame {frame_index} does not exist.")
        return 0
    if frame_index is None:
        raise ExportError(f"The source image has {number_of_frames} frames; say which frame the mask belongs to.")
    if not 0 <= frame_index < number_of_frames:
        raise ExportError(
            f"Frame {frame_index} does not exist: the source image has frames 0 to {number_of_frames - 1}."
        )
    return frame_index


def _binary_mask(mask: np.ndarray, expected: tuple[int, int], what: str) -> np.ndarray:
    """The mask as booleans (nonzero = lesion), checked to be rows x columns of ``what``."""
    array = np.asarray(mask)
    if array.ndim != 2 or array.shape != expected:
        raise ExportError(
            f"The mask is {_size_text(array.shape)} but {what} is "
            f"{expected[0]} rows x {expected[1]} columns; they must match."
        )
    return array > 0


def _size_text(shape: Iterable[int]) -> str:
    sizes = list(shape)
    if len(sizes) == 2:
        return f"{sizes[0]} rows x {sizes[1]} columns"
    return "of shape " + " x ".join(str(size) for size in sizes)


def _version_text(model_version: str, model_sha256: str) -> str:
    return f"{model_version} sha256:{model_sha256[:VERSION_HASH_LENGTH]}"


def _segment_description(
    label: str, model_name: str, model_version: str, model_sha256: str
) -> highdicom.seg.SegmentDescription:
    algorithm = highdicom.AlgorithmIdentificationSequence(
        name=model_name,
        version=_version_text(model_version, model_sha256),
        family=codes.cid7162.ArtificialIntelligence,
    )
    return highdicom.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def _single_frame_stand_in(source: pydicom.Dataset) -> pydicom.Dataset:
    """The source's header without pixel data; a cine source is presented as
    one Ultrasound Image with the same SOP Instance UID (see module docstring)."""
    stand_in = pydicom.Dataset()
    for element in source:
        if element.tag != PIXEL_DATA_TAG:
            stand_in.add(copy.deepcopy(element))
    if hasattr(source, "file_meta"):
        stand_in.file_meta = copy.deepcopy(source.file_meta)
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        for keyword in MULTIFRAME_KEYWORDS:
            if keyword in stand_in:
                delattr(stand_in, keyword)
        stand_in.SOPClassUID = ULTRASOUND_IMAGE_STORAGE
    # Without position and orientation a Frame of Reference would make
    # highdicom ask for geometry the image does not have; the mask is aligned
    # pixel for pixel with the source, which needs none.
    if "FrameOfReferenceUID" in stand_in and "ImagePositionPatient" not in stand_in:
        del stand_in.FrameOfReferenceUID
    # Nor Pixel Spacing: highdicom would write Pixel Measures without the
    # Slice Thickness its reader requires, and the Segmentation would not
    # open. The source, which the Segmentation references, keeps the spacing.
    if "FrameOfReferenceUID" not in stand_in and "PixelSpacing" in stand_in:
        del stand_in.PixelSpacing
    return stand_in


def _point_at_cine_frame(segmentation: pydicom.Dataset, source: pydicom.Dataset, frame_index: int) -> None:
    """Make the references name the real cine loop and its judged frame."""
    for series in segmentation.ReferencedSeriesSequence:
        for instance in series.ReferencedInstanceSequence:
            if instance.ReferencedSOPInstanceUID == source.SOPInstanceUID:
                instance.ReferencedSOPClassUID = source.SOPClassUID
    for frame in segmentation.PerFrameFunctionalGroupsSequence:
        for derivation in frame.get("DerivationImageSequence", []):
            for reference in derivation.SourceImageSequence:
                if reference.ReferencedSOPInstanceUID == source.SOPInstanceUID:
                    reference.ReferencedSOPClassUID = source.SOPClassUID
                    # Referenced Frame Number counts from 1.
                    reference.ReferencedFrameNumber = frame_index + 1


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An 8-bit RGB copy of a grey (rows x columns) or colour image."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, np.newaxis], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ExportError(f"The image must be grey or RGB, not of shape {array.shape}.")
    if array.dtype != np.uint8:
        raise ExportError(f"The image must have 8-bit pixels, not {array.dtype}.")
    return np.ascontiguousarray(array[:, :, :3])
