"""Test files built in memory: photographs carrying every kind of metadata a
camera or colposcope writes, DICOM ultrasound with identifying attributes,
and deliberately broken files. Nothing here touches the disk."""

from __future__ import annotations

import io
import random
import struct
import zlib
from functools import cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from PIL import Image, PngImagePlugin
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, generate_uid

from imaging.pipeline.deidentify import PROFILE_EDITION

ULTRASOUND_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ULTRASOUND_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
VL_PHOTOGRAPHIC_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"

REAL_GOOD = {
    "examples_rgb_color.dcm": (1, 240, 320),
    "examples_jpeg2k.dcm": (1, 480, 640),
    "examples_ybr_color.dcm": (30, 240, 320),
    "examples_palette.dcm": (1, 350, 800),
}
REAL_BROKEN = ["MR_truncated.dcm", "badVR.dcm"]

XMP_PACKET = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xap="http://ns.adobe.com/xap/1.0/" xap:CreatorTool="Colposcope 3000"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
SECRET = "Jane Doe"


@cache
def real_dicom(name: str) -> bytes:
    """One of pydicom's real test files, as bytes."""
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path).read_bytes()


def _pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour picture with some texture: JPEG-compressible and
    different for every seed (so each file has its own sha256)."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    generator = np.random.default_rng(seed)
    noise = generator.integers(0, 24, size=(height, width), dtype=np.int16).astype(np.float32)
    red = (rows + noise) % 256
    green = (columns + noise) % 256
    blue = ((rows + columns) / 2 + seed * 37) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Colposcope Maker"  # Make
    exif[0x0110] = "CX-1"  # Model
    exif[0x013B] = SECRET  # Artist
    exif[0x0112] = orientation
    gps = exif.get_ifd(0x8825)
    gps[0x0001] = "N"
    gps[0x0002] = (51.0, 30.0, 12.5)
    gps[0x0003] = "W"
    gps[0x0004] = (0.0, 7.0, 39.0)
    gps[0x001B] = b"ASCII\x00\x00\x00GPS-FIX"  # GPSProcessingMethod: puts "GPS" in the bytes
    details = exif.get_ifd(0x8769)
    details[0x927C] = b"MAKERNOTE serial 12345"  # MakerNote
    details[0x9286] = b"ASCII\x00\x00\x00" + SECRET.encode()  # UserComment
    return exif


def jpeg_with_metadata(
    width: int = 64, height: int = 48, *, seed: int = 0, orientation: int = 1, quality: int = 90
) -> bytes:
    """A JPEG carrying EXIF (with GPS and a maker note), XMP and a comment."""
    buffer = io.BytesIO()
    Image.fromarray(_pattern(height, width, seed)).save(
        buffer,
        format="JPEG",
        quality=quality,
        exif=_exif(orientation),
        xmp=XMP_PACKET,
        comment=f"Patient {SECRET}".encode(),
    )
    return buffer.getvalue()


def oriented_jpeg(*, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """A 40 × 20 (width × height) JPEG whose EXIF says rotate 90° clockwise
    (orientation 6), and the pixels as stored."""
    buffer = io.BytesIO()
    image = _pattern(20, 40, seed)
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, exif=_exif(orientation=6))
    data = buffer.getvalue()
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return data, stored


def png_with_metadata(width: int = 48, height: int = 32, *, seed: int = 0) -> bytes:
    """A PNG carrying tEXt, iTXt (XMP) and eXIf chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", SECRET)
    info.add_text("Comment", f"Patient {SECRET}, born 1980-02-03")
    info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
    buffer = io.BytesIO()
    Image.fromarray(_pattern(height, width, seed)).save(buffer, format="PNG", pnginfo=info, exif=_exif())
    return buffer.getvalue()


def tiff_with_metadata(width: int = 40, height: int = 30, *, seed: int = 0) -> bytes:
    """An uncompressed TIFF with descriptive tags and EXIF."""
    buffer = io.BytesIO()
    tags = {270: f"Patient {SECRET}", 315: SECRET, 305: "Colposcope firmware 1.2"}
    Image.fromarray(_pattern(height, width, seed)).save(buffer, format="TIFF", tiffinfo=tags, exif=_exif())
    return buffer.getvalue()


def big_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A 12-megapixel camera photo with EXIF, for the benchmark."""
    return jpeg_with_metadata(width, height, seed=7, quality=92)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width * 3) * 4)  # a few rows of zeros, not the whole image
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def random_after_preamble(size: int = 4096, *, seed: int = 1) -> bytes:
    """A 128-byte preamble, "DICM", then random bytes."""
    generator = random.Random(seed)
    return b"\x00" * 128 + b"DICM" + bytes(generator.getrandbits(8) for _ in range(size))


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    return meta


def to_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ultrasound_dataset(
    *,
    rows: int = 48,
    columns: int = 64,
    frames: int = 1,
    monochrome_bits: int | None = None,
    seed: int = 0,
    modality: str = "US",
    sop_class: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    burned_in_annotation: str | None = None,
    manufacturer: str = "Acme Ultrasound",
    model: str = "Sono 9",
) -> Dataset:
    """A small uncompressed ultrasound image: RGB, or monochrome of 8 or 16
    bits; with the usual identifying attributes and two private tags."""
    sop_instance = generate_uid()
    if sop_class is None:
        sop_class = ULTRASOUND_MULTIFRAME_STORAGE if frames > 1 else ULTRASOUND_IMAGE_STORAGE
    dataset = Dataset()
    dataset.file_meta = _file_meta(sop_class, sop_instance)
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = sop_instance
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = series_uid or generate_uid()
    dataset.Modality = modality
    dataset.PatientName = "Doe^Jane"
    dataset.PatientID = "MRN-0042"
    dataset.PatientBirthDate = "19800203"
    dataset.PatientSex = "F"
    dataset.PatientAddress = "1 High Street, Leeds"
    dataset.OtherPatientIDs = "NHS-943-476-5919"
    dataset.ReferringPhysicianName = "Who^Doctor"
    dataset.PerformingPhysicianName = "House^Gregory"
    dataset.InstitutionName = "St Elsewhere Hospital"
    dataset.InstitutionAddress = "2 Low Road, Leeds"
    dataset.StationName = "US-ROOM-3"
    dataset.DeviceSerialNumber = "SN-998877"
    dataset.AccessionNumber = "ACC-5566"
    dataset.StudyID = "S-77"
    dataset.StudyDate = "20240315"
    dataset.StudyTime = "101500"
    dataset.SeriesDate = "20240315"
    dataset.AcquisitionDate = "20240315"
    dataset.ContentDate = "20240315"
    dataset.ImageComments = "Left lobe nodule, patient Jane Doe"
    dataset.StudyDescription = "Thyroid ultrasound for Jane Doe"
    dataset.Manufacturer = manufacturer
    dataset.ManufacturerModelName = model
    if burned_in_annotation is not None:
        dataset.BurnedInAnnotation = burned_in_annotation
    block = dataset.private_block(0x0029, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", "private patient note Jane Doe")
    block.add_new(0x02, "UI", generate_uid())
    generator = np.random.default_rng(seed)
    if monochrome_bits is None:
        pixels = np.stack([_pattern(rows, columns, seed + index) for index in range(frames)])
        dataset.PhotometricInterpretation = "RGB"
        samples = 3
    else:
        dtype = np.uint8 if monochrome_bits == 8 else np.uint16
        top = 255 if monochrome_bits == 8 else 4095
        pixels = generator.integers(0, top, size=(frames, rows, columns), dtype=np.int64).astype(dtype)
        dataset.PhotometricInterpretation = "MONOCHROME2"
        samples = 1
    single = pixels[0] if frames == 1 else pixels
    dataset.set_pixel_data(single, dataset.PhotometricInterpretation, monochrome_bits or 8)
    if frames > 1:
        dataset.NumberOfFrames = frames
        dataset.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
        dataset.FrameTime = "33.3"
    dataset.SamplesPerPixel = samples
    return dataset


def ultrasound_dicom(**options: Any) -> bytes:
    return to_bytes(ultrasound_dataset(**options))


def rle_ultrasound(*, seed: int = 3) -> bytes:
    dataset = ultrasound_dataset(monochrome_bits=8, seed=seed)
    dataset.compress(RLELossless)
    return to_bytes(dataset)


def photograph_dicom(*, seed: int = 0) -> bytes:
    """A VL Photographic Image (a colposcope exporting DICOM)."""
    return ultrasound_dicom(modality="XC", sop_class=VL_PHOTOGRAPHIC_STORAGE, seed=seed)


def ct_dicom() -> bytes:
    """A CT slice: neither ultrasound nor a photograph."""
    return ultrasound_dicom(modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2", monochrome_bits=16)


def pixel_length_mismatch() -> bytes:
    """A DICOM whose header says 480 × 640 but whose pixel data hold 64 × 48."""
    dataset = ultrasound_dataset(monochrome_bits=8)
    dataset.Rows = 480
    dataset.Columns = 640
    return to_bytes(dataset)


# --- Every attribute of PS3.15 Table E.1-1 that pydicom knows ---------------


def _tag(entry: tuple[int, ...]) -> int:
    return (entry[0] << 16) | entry[1]


def profile_tables() -> dict[str, list[tuple[int, ...]]]:
    return dicom_anonymization_database_selector(PROFILE_EDITION)


def _sequence_value(index: int) -> Sequence:
    """One item such as reference sequences carry: a referenced image (its
    instance UID links back to the patient's record), a code and a person."""
    item = Dataset()
    item.ReferencedSOPClassUID = ULTRASOUND_IMAGE_STORAGE
    item.ReferencedSOPInstanceUID = f"2.25.{index * 7_919 + 9_000_000_000_000}"
    item.CodeValue = f"CODE{index}"[:16]
    item.CodingSchemeDesignator = "99HOSP"
    item.CodeMeaning = "Reference"
    item.PersonName = "Doe^Jane"
    return Sequence([item])


def plausible_value(tag: int, vr: str, index: int) -> Any:
    """An identifying-looking value of the right VR for one attribute."""
    keyword = keyword_for_tag(tag) or f"tag{tag:08X}"
    vr = vr.split(" or ")[0]
    text = {
        "AE": f"AE{index}"[:16],
        "AS": "045Y",
        "CS": f"SECRET{index}"[:16],
        "DA": "20240315",
        "DT": "20240315101500",
        "TM": "101500",
        "DS": "1.5",
        "IS": str(7 + index),
        "LO": f"{SECRET} {keyword}"[:64],
        "LT": f"{SECRET} {keyword} long text",
        "PN": "Doe^Jane",
        "SH": f"JD{index}"[:16],
        "ST": f"{SECRET} {keyword} short text",
        "UC": f"{SECRET} {keyword}",
        "UR": "http://hospital.example/patient/42",
        "UT": f"{SECRET} {keyword} unlimited text",
        "UI": f"2.25.{(index + 1) * 1_000_003 + 5_000_000_000_000}",
    }
    if vr in text:
        return text[vr]
    if vr in ("OB", "UN", "OW"):
        return f"secret{index:04d}".encode()
    if vr in ("US", "UL", "SS", "SL"):
        return 7
    if vr in ("FL", "FD"):
        return 1.5
    if vr == "SQ":
        return _sequence_value(index)
    raise ValueError(f"no plausible value for VR {vr}")


# Attributes the image needs to stay a decodable ultrasound image; set by
# ultrasound_dataset() with real values.
_STRUCTURAL = {"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID"}


def full_profile_dataset(*, seed: int = 0, uids: dict[int, str] | None = None) -> tuple[Dataset, dict[int, Any]]:
    """An ultrasound image carrying every attribute of the profile's tables
    that pydicom's dictionary knows (plus one overlay and one curve group for
    the repeating-group rows), and the values set, by tag. `uids` fixes the
    UID attributes (to share them between files)."""
    dataset = ultrasound_dataset(seed=seed)
    values: dict[int, Any] = {}
    tables = profile_tables()
    index = 0
    for table, entries in tables.items():
        if table == "ALL_TAGS":
            continue
        for entry in entries:
            if len(entry) != 2:
                continue
            tag = _tag(entry)
            if entry[0] in (0x0000, 0x0002) or not dictionary_has_tag(tag):
                continue
            keyword = keyword_for_tag(tag)
            vr = dictionary_VR(tag)
            index += 1
            if keyword in _STRUCTURAL:
                values[tag] = dataset[tag].value
                continue
            value = uids[tag] if uids is not None and tag in uids else plausible_value(tag, vr, index)
            dataset.add_new(tag, vr.split(" or ")[0], value)
            values[tag] = value
    # Repeating groups: overlay comments and data, curve data.
    dataset.add_new(0x60004000, "LT", f"Overlay note on {SECRET}")
    dataset.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    dataset.add_new(0x50000005, "US", 1)  # Curve Dimensions
    dataset.add_new(0x50002500, "LO", f"Curve label {SECRET}")
    if uids is not None:
        for tag, value in uids.items():
            if tag in dataset:
                dataset[tag].value = value
                values[tag] = value
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset, values


def uid_values(dataset: Dataset) -> dict[int, str]:
    """The profile's U attributes of `dataset`, by tag."""
    found = {}
    for entry in profile_tables()["U_TAGS"]:
        tag = _tag(entry)
        if entry[0] not in (0x0000, 0x0002) and tag in dataset and dataset[tag].value:
            found[tag] = str(dataset[tag].value)
    return found


# --- Participants ready for images ------------------------------------------


def randomized(participant: Any, by: Any) -> Any:
    """Images are accepted only after randomization (by a coordinator)."""
    from randomization.services import participant_randomize
    from tests.conftest import actor_for

    participant_randomize(actor=actor_for(by), participant=participant)
    participant.refresh_from_db()
    return participant


def other_trial_participant(make_user: Any, *, indication: str = "thyroid", code: str = "OTHER") -> tuple[Any, Any]:
    """A randomized participant of a second trial (whose first site is also
    C01, so study ids repeat across the two trials), and its coordinator."""
    import datetime as dt

    from django.utils import timezone

    from randomization import services as randomization_services
    from tests.conftest import COVARIATES, CRITERIA, ELIGIBLE_CERVICAL, ELIGIBLE_THYROID, SYSTEM, actor_for
    from trial import services
    from trial.models import Indication, Role, TrialStatus

    trial = services.trial_create(
        actor=SYSTEM,
        code=code,
        title="Another trial",
        indications=[Indication.CERVICAL, Indication.THYROID],
        planned_sample_size=100,
        start_date=dt.date(2026, 1, 5),
        stratification_covariates=COVARIATES,
    )
    services.protocol_version_add(
        actor=SYSTEM,
        trial=trial,
        version="1.0",
        effective_date=dt.date(2026, 1, 1),
        consent_form_version="1.0",
        eligibility_criteria=cast(list[dict[str, Any]], CRITERIA),
    )
    site = services.site_add(actor=SYSTEM, trial=trial, code="C01", name="Other site", target_participants=50)
    services.trial_set_status(actor=SYSTEM, trial=trial, status=TrialStatus.RECRUITING, reason="Ethics approval")
    coordinator = make_user(f"coordinator-{code.lower()}", Role.COORDINATOR, trial=trial, site=site)
    randomization_services.scheme_configure(
        actor=SYSTEM, trial=trial, method="permuted_blocks", factors=["site", "indication"], block_sizes=[2, 4]
    )
    randomization_services.scheme_activate(actor=SYSTEM, trial=trial)
    actor = actor_for(coordinator)
    entry = services.screening_create(
        actor=actor,
        site=site,
        screened_on=timezone.localdate() - dt.timedelta(days=3),
        indication=indication,
        year_of_birth=1980,
        sex="female",
    )
    answers = ELIGIBLE_THYROID if indication == Indication.THYROID else ELIGIBLE_CERVICAL
    services.eligibility_assess(actor=actor, entry=entry, answers=dict(answers))
    entry.refresh_from_db()
    covariates = {"nodule_size_band": "10-19"} if indication == Indication.THYROID else {"hpv_status": "positive"}
    participant = services.participant_enroll(
        actor=actor,
        entry=entry,
        form_version="1.0",
        consented_at=timezone.now() - dt.timedelta(hours=1),
        taken_by=coordinator,
        covariates=covariates,
    )
    return randomized(participant, coordinator), coordinator
