"""De-identification of what is stored: every attribute of the PS3.15
Annex E Basic Profile that must go is gone from the stored DICOM (checked
against dicomanonymizer's tables for the edition the pipeline names), UIDs
are replaced consistently within a trial and differently across trials,
photographs carry no EXIF, XMP, GPS or comments, and the original file is
never written to disk."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.conf import settings
from PIL import Image as PillowImage
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imaging import services, storage
from imaging.models import DeidentificationRecord, Image
from imaging.pipeline.deidentify import PROFILE_EDITION
from tests.conftest import actor_for
from tests.imaging_files import (
    REAL_GOOD,
    SECRET,
    full_profile_dataset,
    jpeg_with_metadata,
    oriented_jpeg,
    other_trial_participant,
    png_with_metadata,
    profile_tables,
    randomized,
    real_dicom,
    tiff_with_metadata,
    to_bytes,
    uid_values,
    ultrasound_dicom,
)
from trial.models import Participant


@pytest.fixture
def thyroid(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="thyroid"), coordinator)


@pytest.fixture
def cervical(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="cervical"), coordinator)


def accepted(user: Any, participant: Participant, data: bytes, name: str = "file") -> Image:
    outcome = services.image_upload(actor=actor_for(user), participant=participant, name=name, data=data)
    assert outcome.status == services.ACCEPTED, outcome.reason
    assert outcome.image is not None
    return outcome.image


def stored_bytes(image: Image) -> bytes:
    return storage.read_verified(image.file.name, image.sha256)


def stored_dicom(image: Image) -> Dataset:
    return pydicom.dcmread(io.BytesIO(stored_bytes(image)))


def _tag(entry: tuple[int, ...]) -> int:
    return (entry[0] << 16) | entry[1]


def _plain(value: Any) -> Any:
    """A comparable form of an element's value (sequences item by item)."""
    if isinstance(value, Sequence):
        return [{element.tag: _plain(element.value) for element in item} for item in value]
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(item) for item in value]
    return str(value) if value is not None else None


def _is_empty(value: Any) -> bool:
    return value in (None, "", b"") or (isinstance(value, Sequence | list) and len(value) == 0)


def profile_violations(stored: Dataset, original: Dataset) -> list[str]:
    """What the stored file still carries that Table E.1-1 says must go: X
    present, Z not empty, D or U equal to the original value."""
    tables = profile_tables()
    found: list[str] = []

    def holder(entry: tuple[int, ...]) -> tuple[Dataset, Dataset]:
        if entry[0] == 0x0002:
            return stored.file_meta, original.file_meta
        return stored, original

    for entry in tables["X_TAGS"]:
        if len(entry) == 2:
            after, _ = holder(entry)
            if _tag(entry) in after:
                found.append(f"X {after[_tag(entry)].name} is present")
            continue
        group, element, group_mask, element_mask = entry
        for item in stored.iterall():
            if item.tag.group & group_mask == group & group_mask and item.tag.element & element_mask == element:
                found.append(f"X {item.tag} (repeating group) is present")
    for entry in tables["Z_TAGS"]:
        tag = _tag(entry)
        after, _ = holder(entry)
        if tag == 0x00100010:  # Patient's Name: replaced by the study id, checked below
            continue
        if tag in after and not _is_empty(after[tag].value):
            found.append(f"Z {after[tag].name} is not empty: {after[tag].value!r}")
    for entry in tables["D_TAGS"]:
        tag = _tag(entry)
        after, before = holder(entry)
        if tag in after and tag in before and _plain(after[tag].value) == _plain(before[tag].value):
            found.append(f"D {after[tag].name} kept its original value")
    for entry in tables["U_TAGS"]:
        tag = _tag(entry)
        after, before = holder(entry)
        if tag in before and before[tag].value:
            if tag not in after or not after[tag].value:
                found.append(f"U {before[tag].name} is missing")
            elif _plain(after[tag].value) == _plain(before[tag].value):
                found.append(f"U {after[tag].name} kept its original UID")
    private = [str(item.tag) for item in stored.iterall() if item.tag.is_private]
    if private:
        found.append(f"private tags {private}")
    return found


def test_the_check_covers_most_of_the_profile() -> None:
    """The synthetic file makes the check meaningful: it carries nearly every
    attribute of the tables that pydicom knows."""
    dataset, values = full_profile_dataset()
    tables = profile_tables()
    for table in ("X_TAGS", "Z_TAGS", "D_TAGS", "U_TAGS"):
        known = [
            entry
            for entry in tables[table]
            if len(entry) == 2 and entry[0] not in (0x0000, 0x0002) and pydicom.datadict.dictionary_has_tag(_tag(entry))
        ]
        present = [entry for entry in known if _tag(entry) in dataset]
        assert len(present) == len(known), table
        assert len(present) >= 0.9 * len([entry for entry in tables[table] if len(entry) == 2]) or table == "X_TAGS"
    assert len(values) > 500
    assert PROFILE_EDITION in ("dicomfields_2026c",)


def test_the_stored_dicom_has_none_of_the_profile_attributes_that_must_go(
    coordinator: Any, thyroid: Participant
) -> None:
    dataset, _ = full_profile_dataset()
    data = to_bytes(dataset)
    original = pydicom.dcmread(io.BytesIO(data))
    image = accepted(coordinator, thyroid, data)
    stored = stored_dicom(image)
    assert profile_violations(stored, original) == []
    assert stored.PatientName == stored.PatientID == thyroid.study_id
    assert stored.PatientIdentityRemoved == "YES"
    assert stored.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert stored.file_meta.MediaStorageSOPInstanceUID == stored.SOPInstanceUID != original.SOPInstanceUID
    # No identifying text survives anywhere in the file.
    raw = stored_bytes(image)
    for value in (SECRET.encode(), b"Doe^Jane", b"MRN-0042", b"19800203", b"20240315", b"St Elsewhere", b"SN-998877"):
        assert value not in raw, value


def test_references_kept_in_sequences_lose_their_uids_and_people(coordinator: Any, thyroid: Participant) -> None:
    dataset, _ = full_profile_dataset()
    stored = stored_dicom(accepted(coordinator, thyroid, to_bytes(dataset)))
    for keyword in ("ReferencedImageSequence", "SourceImageSequence"):  # X/Z/U*: kept, UIDs replaced
        (before,), (after,) = dataset[keyword].value, stored[keyword].value
        assert after.ReferencedSOPInstanceUID != before.ReferencedSOPInstanceUID
        assert after.ReferencedSOPInstanceUID.startswith("2.25.")
        assert after.ReferencedSOPClassUID == before.ReferencedSOPClassUID  # what it is, not who
        assert after.PersonName == ""


def test_the_repeating_group_attributes_are_removed(coordinator: Any, thyroid: Participant) -> None:
    dataset, _ = full_profile_dataset()
    stored = stored_dicom(accepted(coordinator, thyroid, to_bytes(dataset)))
    for tag in (0x60004000, 0x60003000, 0x50000005, 0x50002500):
        assert tag in dataset and tag not in stored


@pytest.mark.parametrize("name", sorted(REAL_GOOD))
def test_every_real_file_is_stored_de_identified(name: str, coordinator: Any, thyroid: Participant) -> None:
    data = real_dicom(name)
    image = accepted(coordinator, thyroid, data, name=name)
    stored = stored_dicom(image)
    original = pydicom.dcmread(io.BytesIO(data))
    assert profile_violations(stored, original) == []
    assert stored.PatientName == stored.PatientID == thyroid.study_id
    assert stored.PatientIdentityRemoved == "YES"
    assert str(original.PatientName) != thyroid.study_id
    assert "StudyDate" not in stored or not stored.StudyDate


def test_the_record_lists_attribute_names_never_values(coordinator: Any, thyroid: Participant) -> None:
    image = accepted(coordinator, thyroid, ultrasound_dicom())
    record = DeidentificationRecord.objects.get(image=image)
    assert {"PatientAddress", "OtherPatientIDs", "InstitutionAddress", "ImageComments"} <= set(record.removed)
    assert {"PatientName", "PatientID", "StudyInstanceUID", "PatientBirthDate", "InstitutionName"} <= set(
        record.changed
    )
    assert "private (0029,1001)" in record.removed
    assert record.private_removed == 3
    dumped = json.dumps([record.removed, record.changed, record.profile])
    for value in ("Doe", "Jane", "MRN-0042", "1980", "Elsewhere", "SN-998877", "Leeds"):
        assert value not in dumped


def test_uids_stay_together_within_a_trial_and_differ_across_trials(
    coordinator: Any, thyroid: Participant, enroll: Callable[..., Participant], make_user: Callable[..., Any]
) -> None:
    first, _ = full_profile_dataset(seed=1)
    shared = {tag: uid for tag, uid in uid_values(first).items() if tag != 0x00080018}  # not the SOP Instance UID
    assert len(shared) >= 50
    second, _ = full_profile_dataset(seed=2, uids=shared)
    third, _ = full_profile_dataset(seed=3, uids=shared)
    same_trial = randomized(enroll(indication="thyroid"), coordinator)
    other_trial, other_coordinator = other_trial_participant(make_user)

    stored_first = stored_dicom(accepted(coordinator, thyroid, to_bytes(first)))
    stored_second = stored_dicom(accepted(coordinator, same_trial, to_bytes(second)))
    stored_third = stored_dicom(accepted(other_coordinator, other_trial, to_bytes(third)))
    for tag, original in shared.items():
        mapped = str(stored_first[tag].value)
        assert mapped != original, stored_first[tag].name
        assert str(stored_second[tag].value) == mapped, stored_first[tag].name
        assert str(stored_third[tag].value) != mapped, stored_first[tag].name
    assert stored_first.SOPInstanceUID != stored_second.SOPInstanceUID


def test_real_images_of_one_series_join_one_study(coordinator: Any, thyroid: Participant) -> None:
    colour = accepted(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
    jpeg2000 = accepted(coordinator, thyroid, real_dicom("examples_jpeg2k.dcm"))
    assert colour.study_id == jpeg2000.study_id
    original = pydicom.dcmread(io.BytesIO(real_dicom("examples_rgb_color.dcm")))
    stored_colour, stored_jpeg2000 = stored_dicom(colour), stored_dicom(jpeg2000)
    assert stored_colour.StudyInstanceUID == stored_jpeg2000.StudyInstanceUID != original.StudyInstanceUID
    assert stored_colour.SeriesInstanceUID == stored_jpeg2000.SeriesInstanceUID != original.SeriesInstanceUID
    assert colour.study is not None and colour.study.study_instance_uid == stored_colour.StudyInstanceUID


PHOTOS: dict[str, Callable[[], bytes]] = {
    "jpeg": jpeg_with_metadata,
    "png": png_with_metadata,
    "tiff": tiff_with_metadata,
    "oriented-jpeg": lambda: oriented_jpeg()[0],
}


@pytest.mark.parametrize("kind", sorted(PHOTOS))
def test_no_stored_photo_has_exif_xmp_gps_or_comments(kind: str, coordinator: Any, cervical: Participant) -> None:
    data = PHOTOS[kind]()
    with PillowImage.open(io.BytesIO(data)) as original:  # the original carries them
        exif = original.getexif()
        assert exif[0x013B] == SECRET  # Artist
        assert kind == "tiff" or exif.get_ifd(0x8825)  # Pillow writes no GPS directory into a TIFF
    image = accepted(coordinator, cervical, data, name=f"cervix.{kind}")
    stored = stored_bytes(image)
    with PillowImage.open(io.BytesIO(stored)) as photo:
        assert len(photo.getexif()) == 0
        assert not {"exif", "xmp", "comment", "XML:com.adobe.xmp", "Author", "Comment", "icc_profile"} & set(photo.info)
        assert not getattr(photo, "text", {})
    for marker in (b"Exif", b"http://ns.adobe.com/xap", b"GPS", SECRET.encode(), b"MAKERNOTE"):
        assert marker not in stored, marker


def test_originals_are_never_written_to_disk(coordinator: Any, thyroid: Participant, cervical: Participant) -> None:
    originals = [ultrasound_dicom(), real_dicom("examples_palette.dcm"), jpeg_with_metadata(), png_with_metadata()]
    for data in originals[:2]:
        accepted(coordinator, thyroid, data)
    for data in originals[2:]:
        accepted(coordinator, cervical, data)
    written = [path.read_bytes() for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]
    assert len(written) >= 4 * 2
    for content in written:
        assert content not in originals
        for value in (SECRET.encode(), b"Doe^Jane", b"MRN-0042", b"OB^^^^", b"Exif"):
            assert value not in content
