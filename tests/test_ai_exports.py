"""The AI mask as outputs others can open: a DICOM Segmentation over the real
ultrasound files pydicom ships, and a PNG overlay for photographs."""

from __future__ import annotations

import io
import warnings

import highdicom
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ai_engine.exports import ExportError, dicom_bytes, dicom_segmentation, overlay_png

SINGLE_FRAME = "examples_rgb_color.dcm"  # Ultrasound Image Storage, 240 x 320
MULTI_FRAME = "examples_ybr_color.dcm"  # Ultrasound Multi-frame Image Storage, 30 frames, 240 x 320
SHA256 = "0123456789abcdef" + "f" * 48


def _source(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


def _disc(rows: int, columns: int, centre: tuple[int, int] = (120, 150), radius: int = 40) -> np.ndarray:
    row_index, column_index = np.ogrid[:rows, :columns]
    return (row_index - centre[0]) ** 2 + (column_index - centre[1]) ** 2 <= radius**2


def _round_trip(segmentation: pydicom.Dataset) -> highdicom.seg.Segmentation:
    written = dicom_bytes(segmentation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real files' single-component patient names
        return highdicom.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(written)))


def _segment(source: pydicom.Dataset, mask: np.ndarray, frame_index: int | None) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dicom_segmentation(
            source=source,
            mask=mask,
            frame_index=frame_index,
            model_name="thyroid-unet",
            model_version="1.2.0",
            model_sha256=SHA256,
        )


def test_single_frame_ultrasound_segmentation_reads_back_with_its_references_and_mask() -> None:
    source = _source(SINGLE_FRAME)
    mask = _disc(source.Rows, source.Columns)

    back = _round_trip(_segment(source, mask, None))

    assert (back.Rows, back.Columns) == (source.Rows, source.Columns)
    assert back.Modality == "SEG"
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.Manufacturer == "Consilium"
    referenced = back.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    reference = back.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "ReferencedFrameNumber" not in reference

    segment = back.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "thyroid-unet"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "thyroid-unet"
    assert algorithm.AlgorithmVersion == "1.2.0 sha256:0123456789abcdef"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"

    assert back.segmentation_type == highdicom.seg.SegmentationTypeValues.BINARY
    assert np.array_equal(back.pixel_array.astype(bool), mask)


def test_multi_frame_ultrasound_segments_only_the_judged_frame_and_references_it() -> None:
    source = _source(MULTI_FRAME)
    assert int(source.NumberOfFrames) > 1
    mask = _disc(source.Rows, source.Columns, centre=(100, 200), radius=30)

    back = _round_trip(_segment(source, mask, 7))

    assert back.NumberOfFrames == 1
    assert np.array_equal(back.pixel_array.astype(bool), mask)
    reference = back.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert reference.ReferencedFrameNumber == 8  # DICOM counts frames from 1
    instance = back.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert instance.ReferencedSOPClassUID == source.SOPClassUID
    # The stand-in used to build it never leaks into the source dataset.
    assert int(source.NumberOfFrames) == 30


def test_multi_frame_source_needs_a_frame_that_exists() -> None:
    source = _source(MULTI_FRAME)
    mask = _disc(source.Rows, source.Columns)
    with pytest.raises(ExportError, match="say which frame"):
        _segment(source, mask, None)
    with pytest.raises(ExportError, match="frames 0 to 29"):
        _segment(source, mask, 30)


def test_empty_mask_is_still_a_segmentation() -> None:
    source = _source(SINGLE_FRAME)
    back = _round_trip(_segment(source, np.zeros((source.Rows, source.Columns), dtype=np.uint8), 0))
    assert back.NumberOfFrames == 1
    assert not back.pixel_array.any()


def test_mask_of_the_wrong_size_is_refused_naming_both_sizes() -> None:
    source = _source(SINGLE_FRAME)
    with pytest.raises(ExportError) as raised:
        _segment(source, np.zeros((100, 120), dtype=bool), None)
    assert "100 rows x 120 columns" in str(raised.value)
    assert "240 rows x 320 columns" in str(raised.value)


@pytest.mark.parametrize("channels", [None, 3])
def test_overlay_png_changes_pixels_only_inside_the_mask(channels: int | None) -> None:
    generator = np.random.default_rng(0)
    shape = (60, 80) if channels is None else (60, 80, channels)
    image = generator.integers(0, 256, size=shape, dtype=np.uint8)
    mask = _disc(60, 80, centre=(30, 40), radius=15)

    png = overlay_png(image_rgb_or_grey=image, mask=mask)

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    overlay = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert overlay.shape == (60, 80, 3)
    original = image if channels else np.repeat(image[:, :, None], 3, axis=2)
    changed = np.any(overlay != original, axis=2)
    assert changed.any()
    assert not (changed & ~mask).any()
    # The contour along the mask's edge is drawn in the full colour.
    assert tuple(overlay[30, 40 - 15]) == (255, 64, 0)
    # Inside, away from the edge, the image shows through the translucent fill.
    assert tuple(overlay[30, 40]) != (255, 64, 0)


def test_overlay_png_refuses_a_mask_of_another_size() -> None:
    with pytest.raises(ExportError, match="10 rows x 10 columns"):
        overlay_png(image_rgb_or_grey=np.zeros((20, 20), dtype=np.uint8), mask=np.ones((10, 10), dtype=bool))
