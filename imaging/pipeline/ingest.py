"""One upload, from bytes to everything that is stored: the checks in the
order that wastes least work on a bad file (size, type, header, geometry,
decoding, fit with the indication), then de-identification and previews.
Pure: no database, no files written."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom

from imaging.pipeline import dicom, photo, render
from imaging.pipeline.deidentify import deidentify
from imaging.pipeline.errors import Rejected
from imaging.pipeline.sniff import FileKind, sniff

ULTRASOUND = "ultrasound"
PHOTOGRAPH = "photograph"
KIND_FOR_INDICATION = {"thyroid": ULTRASOUND, "cervical": PHOTOGRAPH}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 150_000_000  # pixels × frames


@dataclass
class Processed:
    source_sha256: str  # of the bytes received (duplicate detection); the bytes are never stored
    image_kind: str  # ultrasound | photograph
    file_format: FileKind
    stored: bytes  # de-identified file
    extension: str
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    photometric_interpretation: str
    bits_stored: int
    transfer_syntax: str
    pixel_spacing_mm: tuple[float, float] | None
    spacing_source: str
    modality: str
    manufacturer: str
    model: str
    acquisition_date: dt.date | None
    study_instance_uid: str  # after de-identification (trial-mapped); empty for photographs
    burned_in_annotation: str
    needs_review: bool
    deidentification: dict[str, Any]
    preview: bytes
    thumbnail: bytes
    frame_strip: bytes | None
    key_frame: int
    warnings: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.stored).hexdigest()


def _fits(image_kind: str, indication: str) -> None:
    expected = KIND_FOR_INDICATION[indication]
    if image_kind != expected:
        need = "thyroid participants need ultrasound" if indication == "thyroid" else "colposcopy needs photographs"
        raise Rejected(f"An {image_kind} image does not fit a {indication} participant ({need}).")


def _dicom_kind(facts: dicom.PixelFacts) -> str:
    if facts.sop_class_uid in dicom.ULTRASOUND_SOP_CLASSES or facts.modality == "US":
        return ULTRASOUND
    if facts.sop_class_uid in dicom.PHOTOGRAPH_SOP_CLASSES or facts.modality in ("XC", "GM"):
        return PHOTOGRAPH
    return f"{facts.modality or 'unknown-modality'}"


def _acquisition_date(dataset: pydicom.Dataset) -> dt.date | None:
    for keyword in ("AcquisitionDate", "ContentDate", "StudyDate", "SeriesDate"):
        value = str(dataset.get(keyword, "") or "")
        if len(value) == 8 and value.isdigit():
            try:
                return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
            except ValueError:
                continue
    return None


def process(
    data: bytes,
    *,
    indication: str,
    study_id: str,
    uid_key: bytes,
    limits: Limits,
    header_bands: Mapping[tuple[str, str], int] | None = None,
) -> Processed:
    """Validate, de-identify and render one file. Raises Rejected with the
    reason for anything that cannot be accepted."""
    if not data:
        raise Rejected("The file is empty.")
    if len(data) > limits.max_bytes:
        raise Rejected(f"The file is {len(data):,} bytes, over the limit of {limits.max_bytes:,} bytes.")
    source_sha256 = hashlib.sha256(data).hexdigest()
    kind = sniff(data[:132])
    if kind is None:
        raise Rejected(
            "Unrecognised file type: only DICOM, JPEG, PNG and TIFF are accepted (read from the file's content)."
        )
    if kind == FileKind.DICOM:
        return _process_dicom(data, source_sha256, indication, study_id, uid_key, limits, header_bands or {})
    _fits(PHOTOGRAPH, indication)
    cleaned = photo.clean_photo(data, kind, limits.max_pixels)
    frame = cleaned.pixels
    return Processed(
        source_sha256=source_sha256,
        image_kind=PHOTOGRAPH,
        file_format=kind,
        stored=cleaned.data,
        extension=cleaned.extension,
        rows=frame.shape[0],
        columns=frame.shape[1],
        frames=1,
        samples_per_pixel=3,
        photometric_interpretation="RGB",
        bits_stored=8,
        transfer_syntax="",
        pixel_spacing_mm=None,
        spacing_source="",
        modality="XC",
        manufacturer="",
        model="",
        acquisition_date=None,
        study_instance_uid="",
        burned_in_annotation="",
        needs_review=False,
        deidentification={"profile": "Photograph metadata removal", "removed": cleaned.removed, "changed": []},
        preview=render.preview_png(frame),
        thumbnail=render.thumbnail_png(frame),
        frame_strip=None,
        key_frame=0,
    )


def _process_dicom(
    data: bytes,
    source_sha256: str,
    indication: str,
    study_id: str,
    uid_key: bytes,
    limits: Limits,
    header_bands: Mapping[tuple[str, str], int],
) -> Processed:
    dataset = dicom.read(data)
    facts = dicom.facts(dataset, max_pixels=limits.max_pixels)
    frames = dicom.decode(dataset)
    image_kind = _dicom_kind(facts)
    if image_kind not in (ULTRASOUND, PHOTOGRAPH):
        raise Rejected(
            f"A DICOM {facts.modality or 'image'} ({pydicom.uid.UID(facts.sop_class_uid).name}) is neither "
            "ultrasound nor a photograph; it does not belong in this trial."
        )
    _fits(image_kind, indication)
    acquisition_date = _acquisition_date(dataset)
    band = header_bands.get((facts.manufacturer, facts.model), 0)
    warnings = []
    # Ultrasound machines burn patient details into the pixels as a rule, so
    # only an explicit "NO" is trusted; YES or absent needs a device rule
    # that blanks the band, or a person's review.
    burned_in_possible = facts.burned_in_annotation == "YES" or (
        image_kind == ULTRASOUND and facts.burned_in_annotation != "NO"
    )
    needs_review = burned_in_possible and band == 0
    if needs_review:
        said = "YES" if facts.burned_in_annotation == "YES" else "not stated"
        warnings.append(f"Burned In Annotation {said}: flagged for review before readers see it.")
    try:
        display = dicom.to_display(dataset, frames)
    except dicom.DAMAGED_FILE_ERRORS as error:
        raise Rejected(f"The pixel data cannot be displayed (a damaged lookup table or header?): {error}.") from error
    # A damaged header can also surface only now; nothing half-de-identified is kept.
    try:
        report = deidentify(
            dataset, study_id=study_id, uid_key=uid_key, blank_header_rows=band, decoded_frames=frames if band else None
        )
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
    except dicom.DAMAGED_FILE_ERRORS as error:
        raise Rejected(f"The file cannot be de-identified and written back (corrupt header?): {error}.") from error
    if band:
        display = np.array(display, copy=True)
        display[:, :band, ...] = 0
    key = render.key_frame_index(display.shape[0])
    return Processed(
        source_sha256=source_sha256,
        image_kind=image_kind,
        file_format=FileKind.DICOM,
        stored=buffer.getvalue(),
        extension="dcm",
        rows=facts.rows,
        columns=facts.columns,
        frames=facts.frames,
        samples_per_pixel=facts.samples_per_pixel,
        photometric_interpretation=facts.photometric_interpretation,
        bits_stored=facts.bits_stored,
        transfer_syntax=facts.transfer_syntax,
        pixel_spacing_mm=facts.pixel_spacing_mm,
        spacing_source=facts.spacing_source,
        modality=facts.modality,
        manufacturer=facts.manufacturer,
        model=facts.model,
        acquisition_date=acquisition_date,
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        burned_in_annotation=facts.burned_in_annotation,
        needs_review=needs_review,
        deidentification=report.as_dict(),
        preview=render.preview_png(display[key]),
        thumbnail=render.thumbnail_png(display[key]),
        frame_strip=render.frame_strip_png(display),
        key_frame=key,
        warnings=warnings,
    )
