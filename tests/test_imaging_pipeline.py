"""The pure pipeline (imaging.pipeline.ingest.process): real ultrasound files
ingest with the right geometry, pixel size and previews; broken ones, bombs
and oversized files are rejected with a reason; photographs keep their
pixels. No database."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, pixel_array

from imaging.pipeline import dicom as dicom_module
from imaging.pipeline import render
from imaging.pipeline.errors import Rejected
from imaging.pipeline.ingest import Limits, Processed, process
from imaging.pipeline.sniff import FileKind
from tests.imaging_files import (
    REAL_BROKEN,
    REAL_GOOD,
    ct_dicom,
    jpeg_with_metadata,
    oriented_jpeg,
    photograph_dicom,
    pixel_length_mismatch,
    png_bomb,
    png_with_metadata,
    real_dicom,
    rle_ultrasound,
    tiff_with_metadata,
    to_bytes,
    ultrasound_dataset,
    ultrasound_dicom,
)

KEY = b"a trial's uid key for the tests"


def run(
    data: bytes, indication: str = "thyroid", bands: dict[tuple[str, str], int] | None = None, **limits: Any
) -> Processed:
    return process(
        data, indication=indication, study_id="C01-0001", uid_key=KEY, limits=Limits(**limits), header_bands=bands
    )


def png_pixels(data: bytes | None) -> np.ndarray:
    assert data is not None and data.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(data)))


def original_pixels(name: str) -> np.ndarray:
    dataset = pydicom.dcmread(io.BytesIO(real_dicom(name)))
    frames = pixel_array(dataset, as_rgb=True)
    return frames if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else frames[np.newaxis]


@pytest.mark.parametrize(("name", "geometry"), sorted(REAL_GOOD.items()))
def test_it_ingests_real_ultrasound_with_its_geometry(name: str, geometry: tuple[int, int, int]) -> None:
    processed = run(real_dicom(name))
    frames, rows, columns = geometry
    assert (processed.frames, processed.rows, processed.columns) == (frames, rows, columns)
    assert processed.image_kind == "ultrasound"
    assert processed.file_format == FileKind.DICOM and processed.extension == "dcm"
    assert processed.bits_stored == 8
    preview = png_pixels(processed.preview)
    assert preview.shape[:2] == (rows, columns)  # smaller than the preview edge: not resized
    thumbnail = png_pixels(processed.thumbnail)
    assert max(thumbnail.shape[:2]) == render.THUMBNAIL_EDGE
    assert processed.key_frame == frames // 2
    if frames > 1:
        strip = png_pixels(processed.frame_strip)
        assert strip.shape[0] == render.STRIP_HEIGHT
        assert strip.shape[1] == render.STRIP_FRAMES * round(columns * render.STRIP_HEIGHT / rows)
    else:
        assert processed.frame_strip is None


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        ("examples_rgb_color.dcm", "RGB"),
        ("examples_jpeg2k.dcm", "YBR_RCT"),
        ("examples_ybr_color.dcm", "YBR_FULL_422"),
        ("examples_palette.dcm", "PALETTE COLOR"),
    ],
)
def test_it_reports_the_photometric_interpretation_received(name: str, photometric: str) -> None:
    assert run(real_dicom(name)).photometric_interpretation == photometric


@pytest.mark.parametrize(
    ("name", "spacing"),
    [("examples_ybr_color.dcm", 0.5105), ("examples_palette.dcm", 0.2623)],
)
def test_it_reads_the_pixel_size_from_the_ultrasound_region_calibration(name: str, spacing: float) -> None:
    processed = run(real_dicom(name))
    assert processed.pixel_spacing_mm == (pytest.approx(spacing, abs=1e-4), pytest.approx(spacing, abs=1e-4))
    assert processed.spacing_source == "Ultrasound region calibration"


def test_it_reads_pixel_spacing_when_the_header_has_it() -> None:
    dataset = ultrasound_dataset()
    dataset.PixelSpacing = [0.1, 0.2]
    processed = run(to_bytes(dataset))
    assert processed.pixel_spacing_mm == (0.1, 0.2)
    assert processed.spacing_source == "Pixel Spacing"


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "examples_jpeg2k.dcm"])
def test_it_reports_no_pixel_size_when_uncalibrated(name: str) -> None:
    assert run(real_dicom(name)).pixel_spacing_mm is None


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm"])
def test_the_preview_shows_the_key_frame_in_rgb(name: str) -> None:
    processed = run(real_dicom(name))
    expected = original_pixels(name)[processed.key_frame]
    assert np.array_equal(png_pixels(processed.preview), expected)


def test_the_ybr_cine_preview_is_converted_to_rgb_not_shown_as_ybr() -> None:
    processed = run(real_dicom("examples_ybr_color.dcm"))
    dataset = pydicom.dcmread(io.BytesIO(real_dicom("examples_ybr_color.dcm")))
    raw_ybr = pixel_array(dataset, as_rgb=False)[processed.key_frame]
    preview = png_pixels(processed.preview)
    # A mostly grey-scale scan: in YBR the two chroma channels sit near 128,
    # in RGB all three channels are dark and close to one another.
    assert raw_ybr[..., 1].mean() > 120 and raw_ybr[..., 2].mean() > 120
    means = preview.reshape(-1, 3).mean(axis=0)
    assert means.max() < 20
    assert means.max() - means.min() < 2


def test_the_palette_preview_applies_the_colour_lookup_table() -> None:
    processed = run(real_dicom("examples_palette.dcm"))
    dataset = pydicom.dcmread(io.BytesIO(real_dicom("examples_palette.dcm")))
    coloured = apply_color_lut(pixel_array(dataset), dataset).astype(np.float64)
    expected = (coloured - coloured.min()) * 255.0 / (coloured.max() - coloured.min())
    preview = png_pixels(processed.preview)
    assert preview.shape == (350, 800, 3)
    assert np.abs(preview.astype(np.float64) - expected).max() <= 1.0
    assert np.any(preview[..., 0] != preview[..., 2])  # colour, not the palette indices as grey


@pytest.mark.parametrize("name", sorted(REAL_GOOD))
def test_the_stored_file_keeps_the_pixels_untouched(name: str) -> None:
    stored = pydicom.dcmread(io.BytesIO(run(real_dicom(name)).stored))
    frames = pixel_array(stored, as_rgb=True)
    if int(stored.get("NumberOfFrames", 1) or 1) == 1:
        frames = frames[np.newaxis]
    assert np.array_equal(frames, original_pixels(name))


@pytest.mark.parametrize(
    ("name", "reason"),
    [("MR_truncated.dcm", "truncated"), ("badVR.dcm", "NumberOfFrames is invalid")],
)
def test_it_rejects_the_broken_real_files_with_a_reason(name: str, reason: str) -> None:
    assert name in REAL_BROKEN
    with pytest.raises(Rejected, match=reason):
        run(real_dicom(name))


def _windowed_dataset(photometric: str) -> bytes:
    dataset = ultrasound_dataset(monochrome_bits=16)
    pixels = np.empty((48, 64), dtype=np.uint16)
    pixels[:16], pixels[16:32], pixels[32:] = 500, 2048, 4000
    dataset.set_pixel_data(pixels, photometric, 12)
    dataset.WindowCenter = 2048
    dataset.WindowWidth = 1024
    return to_bytes(dataset)


def test_it_windows_monochrome_images_with_the_window_in_the_header() -> None:
    preview = png_pixels(run(_windowed_dataset("MONOCHROME2")).preview)
    assert preview[0, 0] == 0 and preview[47, 0] == 255
    # Min–max scaling would put 2048 at 113; the window centre puts it mid-grey.
    assert 126 <= preview[20, 0] <= 129


def test_it_inverts_monochrome1() -> None:
    preview = png_pixels(run(_windowed_dataset("MONOCHROME1")).preview)
    assert preview[0, 0] == 255 and preview[47, 0] == 0


@pytest.mark.parametrize(
    ("data", "facts"),
    [
        (ultrasound_dicom(monochrome_bits=8, frames=3), (3, 8, "MONOCHROME2")),
        (ultrasound_dicom(monochrome_bits=16), (1, 16, "MONOCHROME2")),
        (ultrasound_dicom(frames=4), (4, 8, "RGB")),
        (rle_ultrasound(), (1, 8, "MONOCHROME2")),
    ],
    ids=["multi-frame-8-bit", "16-bit", "multi-frame-rgb", "rle"],
)
def test_it_ingests_synthetic_ultrasound(data: bytes, facts: tuple[int, int, str]) -> None:
    processed = run(data)
    assert (processed.frames, processed.bits_stored, processed.photometric_interpretation) == facts
    assert (processed.rows, processed.columns) == (48, 64)
    assert png_pixels(processed.preview).shape[:2] == (48, 64)


def test_the_rle_file_decodes_like_the_uncompressed_one() -> None:
    processed = run(rle_ultrasound())
    assert processed.transfer_syntax == "RLE Lossless"
    plain = ultrasound_dataset(monochrome_bits=8, seed=3)
    stored = pydicom.dcmread(io.BytesIO(processed.stored))
    assert stored.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert np.array_equal(stored.pixel_array, plain.pixel_array)


def test_it_accepts_a_dicom_photograph_for_colposcopy() -> None:
    processed = run(photograph_dicom(), indication="cervical")
    assert processed.image_kind == "photograph"


def test_it_rejects_a_dicom_that_is_neither_ultrasound_nor_photograph() -> None:
    with pytest.raises(Rejected, match="neither ultrasound nor a photograph"):
        run(ct_dicom())


@pytest.mark.parametrize(
    ("data", "indication", "reason"),
    [
        (real_dicom("examples_rgb_color.dcm"), "cervical", "colposcopy needs photographs"),
        (jpeg_with_metadata(), "thyroid", "thyroid participants need ultrasound"),
    ],
)
def test_it_rejects_a_modality_that_does_not_fit_the_indication(data: bytes, indication: str, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        run(data, indication=indication)


def test_it_rejects_an_empty_file() -> None:
    with pytest.raises(Rejected, match="empty"):
        run(b"")


def test_it_rejects_a_file_over_the_size_limit() -> None:
    with pytest.raises(Rejected, match="over the limit of 1,000 bytes"):
        run(real_dicom("examples_rgb_color.dcm"), max_bytes=1000)


def test_it_rejects_an_unrecognised_type_whatever_its_content_claims() -> None:
    with pytest.raises(Rejected, match="Unrecognised file type"):
        run(b"%PDF-1.7 DICM " * 20)


def test_it_rejects_a_png_whose_header_claims_a_huge_image_before_decoding() -> None:
    with pytest.raises(Rejected, match="too large"):
        run(png_bomb(), indication="cervical")


def test_it_bounds_pixels_times_frames_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("decoded despite the pixel limit")

    monkeypatch.setattr(dicom_module, "decode", never)
    # 30 frames of 240 × 320 = 2,304,000 pixels.
    with pytest.raises(Rejected, match="decompression-bomb"):
        run(real_dicom("examples_ybr_color.dcm"), max_pixels=2_000_000)


def test_it_bounds_photo_pixels() -> None:
    with pytest.raises(Rejected, match="over the limit of 1,000 pixels"):
        run(jpeg_with_metadata(), indication="cervical", max_pixels=1000)


def test_it_rejects_pixel_data_shorter_than_the_header_says() -> None:
    with pytest.raises(Rejected, match="shorter than the header says"):
        run(pixel_length_mismatch())


def test_it_rejects_pixel_data_longer_than_the_header_says() -> None:
    dataset = ultrasound_dataset(monochrome_bits=8)
    dataset.Rows = 24
    with pytest.raises(Rejected, match="longer than the header says"):
        run(to_bytes(dataset))


def test_it_rejects_compressed_pixel_data_that_do_not_decode() -> None:
    dataset = pydicom.dcmread(io.BytesIO(real_dicom("examples_jpeg2k.dcm")))
    data = bytearray(dataset.PixelData)
    data[40:4000] = bytes(len(data[40:4000]))
    dataset.PixelData = bytes(data)
    with pytest.raises(Rejected, match="do not decode"):
        run(to_bytes(dataset))


def test_it_flags_burned_in_annotation_for_review_without_a_rule() -> None:
    processed = run(ultrasound_dicom(burned_in_annotation="YES"))
    assert processed.needs_review
    assert processed.burned_in_annotation == "YES"
    assert any("Burned In Annotation" in warning for warning in processed.warnings)


def test_a_device_rule_blanks_the_header_band_of_every_frame() -> None:
    data = ultrasound_dicom(frames=3, burned_in_annotation="YES", manufacturer="Acme", model="Sono 9")
    processed = run(data, bands={("Acme", "Sono 9"): 10})
    assert not processed.needs_review
    stored = pydicom.dcmread(io.BytesIO(processed.stored))
    assert stored.BurnedInAnnotation == "NO"
    frames = stored.pixel_array
    assert frames.shape == (3, 48, 64, 3)
    assert not frames[:, :10].any()
    assert frames[:, 10:].any()
    assert not png_pixels(processed.preview)[:10].any()
    assert processed.deidentification["header_band_blanked"] is True


def test_photos_keep_their_pixels_when_metadata_is_removed() -> None:
    data = jpeg_with_metadata()
    processed = run(data, indication="cervical")
    assert processed.extension == "jpg" and processed.file_format == FileKind.JPEG
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    stored = np.asarray(Image.open(io.BytesIO(processed.stored)).convert("RGB"))
    assert np.array_equal(stored, original)
    # The scan data are copied byte for byte, not re-encoded.
    scan = data[data.index(b"\xff\xda") :]
    assert processed.stored.endswith(scan)
    assert set(processed.deidentification["removed"]) >= {"EXIF (including GPS and maker notes)", "XMP", "JPEG comment"}


def test_png_photos_keep_their_pixels() -> None:
    data = png_with_metadata()
    processed = run(data, indication="cervical")
    assert processed.extension == "png"
    assert np.array_equal(png_pixels(processed.stored), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_a_tiff_is_stored_as_a_lossless_png() -> None:
    data = tiff_with_metadata()
    processed = run(data, indication="cervical")
    assert processed.file_format == FileKind.TIFF
    assert processed.extension == "png"
    assert processed.stored.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(png_pixels(processed.stored), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_the_exif_orientation_is_applied_to_the_pixels() -> None:
    data, stored_pixels = oriented_jpeg()
    processed = run(data, indication="cervical")
    # Orientation 6: the camera was turned; a viewer rotates 90° clockwise.
    assert (processed.rows, processed.columns) == (40, 20)
    upright = np.rot90(stored_pixels, k=-1)
    assert np.array_equal(png_pixels(processed.stored), upright)
    assert np.array_equal(png_pixels(processed.preview), upright)
    assert Image.open(io.BytesIO(processed.stored)).getexif().get(0x0112) is None


def test_it_holds_an_ultrasound_that_does_not_state_burned_in_annotation_for_review() -> None:
    processed = run(ultrasound_dicom())
    assert processed.needs_review
    assert "not stated" in processed.warnings[0]


def test_it_trusts_an_ultrasound_that_states_no_burned_in_annotation() -> None:
    processed = run(ultrasound_dicom(burned_in_annotation="NO"))
    assert not processed.needs_review
    assert processed.warnings == []
