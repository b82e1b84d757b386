"""The imaging API as a coordinator's upload tool and an exporter's source:
real pydicom test files, per-file results, names that never carry what the
file was called, integrity checks on the way out, and the zip export."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image as PillowImage
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imaging import services as imaging_services
from imaging import uploads
from imaging.models import Image, ImageStatus
from imaging.uploads import OversizedUpload, UploadSizeGuard
from randomization.services import participant_randomize
from tests.conftest import actor_for, api_client
from trial import services
from trial.models import Role, WithdrawalScope

GOOD_ULTRASOUND = ["examples_rgb_color.dcm", "examples_ybr_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm"]
BROKEN = {"MR_truncated.dcm": "truncated", "badVR.dcm": "NumberOfFrames is invalid"}
CINE = "examples_ybr_color.dcm"  # 30 frames, pixel spacing in the file


def dicom_bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def upload_file(name: str, data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, dicom_bytes(name) if data is None else data, "application/octet-stream")


def synthetic_cine(seed: int = 0, frames: int = 3) -> bytes:
    """A small ultrasound cine loop (US Multi-frame), quicker than the
    30-frame pydicom example where only permissions are under test."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.Modality, dataset.PatientName, dataset.PatientID = "US", "Doe^Jane", "H123456"
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 48, 64, frames
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelSpacing = [0.2, 0.2]
    pixels = np.random.default_rng(seed).integers(0, 255, (frames, 48, 64), dtype=np.uint8)
    dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def jpeg_bytes(colour: tuple[int, int, int] = (180, 90, 90)) -> bytes:
    buffer = io.BytesIO()
    exif = PillowImage.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x0132] = "2026:01:02 10:00:00"
    PillowImage.new("RGB", (320, 240), colour).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture
def randomized(enroll: Any, coordinator: Any, block_scheme: Any) -> Any:
    def make(indication: str = "thyroid", **kwargs: Any) -> Any:
        participant = enroll(indication=indication, **kwargs)
        participant_randomize(actor=actor_for(kwargs.get("user") or coordinator), participant=participant)
        return participant

    return make


@pytest.fixture
def thyroid(randomized: Any) -> Any:
    return randomized("thyroid")


@pytest.fixture
def cervical(randomized: Any) -> Any:
    return randomized("cervical")


def post_files(user: Any, participant: Any, files: list[SimpleUploadedFile]) -> Any:
    return api_client(user).post(f"/api/v1/participants/{participant.pk}/images/", {"file": files}, format="multipart")


def upload_one(user: Any, participant: Any, name: str) -> Image:
    response = post_files(user, participant, [upload_file(name)])
    assert response.status_code == 201, response.content
    return Image.objects.get(pk=response.json()[0]["image_id"])


# --- Upload ------------------------------------------------------------------------------


def test_it_takes_the_four_good_ultrasound_files_and_rejects_the_two_broken_ones(coordinator, thyroid):
    names = [*GOOD_ULTRASOUND, *BROKEN]
    response = post_files(coordinator, thyroid, [upload_file(name) for name in names])

    assert response.status_code == 201
    results = response.json()
    assert [result["file"] for result in results] == names
    for result in results[:4]:
        assert result["status"] == "accepted", result
        assert result["reason"] == ""
        # These ultrasound files do not state Burned In Annotation: held for review.
        assert Image.objects.get(pk=result["image_id"]).status == ImageStatus.NEEDS_REVIEW
    for result, (name, reason) in zip(results[4:], BROKEN.items(), strict=True):
        assert result["status"] == "rejected", name
        assert reason in result["reason"]
        assert Image.objects.get(pk=result["image_id"]).rejection_reason == result["reason"]


def test_it_lists_geometry_frames_spacing_and_urls_of_each_image(coordinator, thyroid):
    post_files(
        coordinator, thyroid, [upload_file(CINE), upload_file("examples_rgb_color.dcm"), upload_file("badVR.dcm")]
    )

    rows = api_client(coordinator).get(f"/api/v1/participants/{thyroid.pk}/images/").json()

    cine, still, rejected = rows
    assert (cine["rows"], cine["columns"], cine["frames"]) == (240, 320, 30)
    assert cine["pixel_spacing_mm"] == pytest.approx([0.5104970559477806, 0.5104970559477806])
    assert (cine["format"], cine["kind"], cine["status"]) == ("dicom", "ultrasound", "needs_review")
    assert cine["uploaded_by"] == coordinator.username
    assert cine["sha256"] == Image.objects.get(pk=cine["id"]).sha256
    assert cine["urls"]["frames"].endswith(f"/api/v1/images/{cine['id']}/frames.png")
    assert cine["urls"]["file"].endswith(f"/api/v1/images/{cine['id']}/file")
    assert still["frames"] == 1 and still["pixel_spacing_mm"] is None
    assert still["urls"]["frames"] is None
    assert rejected["status"] == "rejected" and "NumberOfFrames" in rejected["rejection_reason"]
    assert rejected["urls"] == {
        "preview": None,
        "thumbnail": None,
        "frames": None,
        "file": None,
        "page": rejected["urls"]["page"],
    }


def test_it_accepts_a_colposcopy_jpeg_and_strips_its_exif(coordinator, cervical):
    response = post_files(coordinator, cervical, [SimpleUploadedFile("cervix.jpg", jpeg_bytes(), "image/jpeg")])

    assert response.status_code == 201
    image = Image.objects.get(pk=response.json()[0]["image_id"])
    detail = api_client(coordinator).get(f"/api/v1/images/{image.pk}/").json()
    assert (detail["format"], detail["kind"], detail["rows"], detail["columns"]) == ("jpeg", "photograph", 240, 320)
    assert detail["deidentification"]["removed"] == ["EXIF (including GPS and maker notes)"]
    stored = api_client(coordinator).get(f"/api/v1/images/{image.pk}/file")
    assert stored["Content-Type"] == "image/jpeg"
    assert b"CameraMaker" not in stored.content


def test_it_rejects_an_ultrasound_file_for_a_colposcopy_participant(coordinator, cervical):
    response = post_files(coordinator, cervical, [upload_file("examples_rgb_color.dcm")])

    assert response.status_code == 200
    (result,) = response.json()
    assert result["status"] == "rejected"
    assert "does not fit a cervical participant" in result["reason"]


def test_it_answers_a_second_upload_of_the_same_file_as_a_duplicate(coordinator, thyroid):
    first = upload_one(coordinator, thyroid, "examples_palette.dcm")

    response = post_files(coordinator, thyroid, [upload_file("examples_palette.dcm")])

    assert response.status_code == 200
    assert response.json() == [
        {
            "file": "examples_palette.dcm",
            "status": "duplicate",
            "image_id": first.pk,
            "reason": "This file was already uploaded for this participant.",
            "warnings": [],
        }
    ]
    assert Image.objects.filter(participant=thyroid).count() == 1


def test_it_refuses_images_before_randomization(coordinator, enroll, block_scheme):
    participant = enroll(indication="thyroid")

    (result,) = post_files(coordinator, participant, [upload_file("examples_palette.dcm")]).json()

    assert result["status"] == "rejected"
    assert "not randomized yet" in result["reason"]


def test_it_keeps_a_path_in_the_uploaded_name_out_of_storage_and_downloads(coordinator, thyroid):
    response = post_files(coordinator, thyroid, [upload_file("../../x.dcm", dicom_bytes("examples_rgb_color.dcm"))])

    (result,) = response.json()
    assert result["status"] == "accepted" and result["file"] == "x.dcm"
    image = Image.objects.get(pk=result["image_id"])
    assert image.original_name == "x.dcm"
    assert image.file.name == f"images/{image.sha256[:2]}/{image.sha256[2:4]}/{image.sha256}.dcm"
    assert ".." not in image.file.name
    for suffix in ("file", "preview.png", "thumbnail.png"):
        download = api_client(coordinator).get(f"/api/v1/images/{image.pk}/{suffix}")
        disposition = download["Content-Disposition"]
        assert f"{thyroid.study_id}_image-{image.pk}" in disposition
        assert "x.dcm" not in disposition and ".." not in disposition and "/" not in disposition


def test_it_rejects_an_oversized_file_from_its_size_without_reading_it(coordinator, thyroid, settings, monkeypatch):
    settings.IMAGING_MAX_UPLOAD_BYTES = 4096
    called: list[str] = []
    monkeypatch.setattr(imaging_services, "image_upload", lambda **kwargs: called.append(kwargs["name"]))
    received: list[Any] = []
    receive = uploads.receive

    def spy(*, files: Any, **kwargs: Any) -> Any:
        received.extend(files)
        return receive(files=received, **kwargs)

    monkeypatch.setattr(uploads, "receive", spy)

    response = post_files(coordinator, thyroid, [upload_file("examples_ybr_color.dcm")])

    assert response.status_code == 200
    (result,) = response.json()
    assert result["status"] == "rejected" and result["image_id"] is None
    assert "over the limit of 4.0 KB" in result["reason"] and "not read" in result["reason"]
    assert called == []
    assert not Image.objects.exists()
    # The size guard kept none of its bytes: the file arrived as a stand-in.
    assert [type(upload) for upload in received] == [OversizedUpload]


def test_it_takes_files_larger_than_djangos_request_memory_limits(coordinator, thyroid, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    data = dicom_bytes(CINE)
    assert len(data) > 100 * 1024

    response = post_files(coordinator, thyroid, [upload_file(CINE)])

    assert response.status_code == 201, response.content
    assert response.json()[0]["status"] == "accepted"


def test_the_size_guard_stops_keeping_the_bytes_of_an_oversized_file():
    guard = UploadSizeGuard(None, max_bytes=10)
    guard.new_file("file", "big.dcm", "application/dicom", 0)

    assert guard.receive_data_chunk(b"x" * 8, 0) == b"x" * 8
    assert guard.receive_data_chunk(b"x" * 8, 8) is None
    assert guard.receive_data_chunk(b"x" * 8, 16) is None
    kept = guard.file_complete(24)

    assert isinstance(kept, OversizedUpload)
    assert (kept.name, kept.size, kept.read()) == ("big.dcm", 24, b"")


def test_it_asks_for_at_least_one_file(coordinator, thyroid):
    response = api_client(coordinator).post(f"/api/v1/participants/{thyroid.pk}/images/", {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()


def test_it_records_each_upload_in_the_audit_trail(coordinator, thyroid):
    from trial.models import AuditEvent

    post_files(coordinator, thyroid, [upload_file("examples_palette.dcm"), upload_file("badVR.dcm")])

    actions = list(AuditEvent.objects.filter(object_type="imaging.image").values_list("action", flat=True))
    assert sorted(actions) == ["image.accept", "image.reject"]


# --- One image and its files ---------------------------------------------------------------


def test_it_shows_the_deidentification_record_by_attribute_name(coordinator, thyroid):
    image = upload_one(coordinator, thyroid, "examples_rgb_color.dcm")

    detail = api_client(coordinator).get(f"/api/v1/images/{image.pk}/").json()

    record = detail["deidentification"]
    assert record["profile"] and record["uids_replaced"] >= 1
    assert detail["original_name"] == "examples_rgb_color.dcm"
    assert detail["study"]["study_instance_uid"]
    # Names only: no value of any attribute is kept in the record.
    assert all(isinstance(name, str) for name in [*record["removed"], *record["changed"]])
    assert record["changed"] or record["removed"]


def test_it_serves_renditions_and_the_file_with_types_and_names(coordinator, thyroid):
    image = upload_one(coordinator, thyroid, CINE)
    client = api_client(coordinator)

    for suffix, content_type, name in [
        ("preview.png", "image/png", f"{thyroid.study_id}_image-{image.pk}_preview.png"),
        ("thumbnail.png", "image/png", f"{thyroid.study_id}_image-{image.pk}_thumbnail.png"),
        ("frames.png", "image/png", f"{thyroid.study_id}_image-{image.pk}_frames.png"),
        ("file", "application/dicom", f"{thyroid.study_id}_image-{image.pk}.dcm"),
    ]:
        response = client.get(f"/api/v1/images/{image.pk}/{suffix}", HTTP_ACCEPT="image/avif,image/webp,*/*")
        assert response.status_code == 200, suffix
        assert response["Content-Type"] == content_type
        assert f'filename="{name}"' in response["Content-Disposition"]
        if content_type == "image/png":
            assert response.content.startswith(b"\x89PNG")
    stored = client.get(f"/api/v1/images/{image.pk}/file")
    assert stored["Content-Disposition"].startswith("attachment")
    assert hashlib.sha256(stored.content).hexdigest() == image.sha256


def test_it_answers_404_for_the_frame_strip_of_a_single_frame_image(coordinator, thyroid):
    image = upload_one(coordinator, thyroid, "examples_palette.dcm")

    response = api_client(coordinator).get(f"/api/v1/images/{image.pk}/frames.png")

    assert response.status_code == 404
    assert "not a cine loop" in response.json()["detail"]


def test_it_answers_404_for_the_file_of_a_rejected_upload(coordinator, thyroid):
    (result,) = post_files(coordinator, thyroid, [upload_file("badVR.dcm")]).json()

    response = api_client(coordinator).get(f"/api/v1/images/{result['image_id']}/file")

    assert response.status_code == 404


def _tamper(name: str) -> None:
    path = Path(default_storage.path(name))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("field", "suffix"), [("file", "file"), ("preview", "preview.png")])
def test_it_refuses_a_tampered_stored_file_with_409_and_logs_it(coordinator, thyroid, caplog, field, suffix):
    image = upload_one(coordinator, thyroid, "examples_rgb_color.dcm")
    _tamper(getattr(image, field).name)

    with caplog.at_level(logging.ERROR, logger="imaging.integrity"):
        response = api_client(coordinator).get(f"/api/v1/images/{image.pk}/{suffix}")

    assert response.status_code == 409
    assert "stored file failed its integrity check" in response.json()["detail"]
    assert any(f"image {image.pk}" in record.getMessage() for record in caplog.records)


def test_it_hides_the_uploaded_name_from_roles_that_do_not_upload(users, coordinator, thyroid):
    image = upload_one(coordinator, thyroid, "examples_rgb_color.dcm")

    for role in (Role.MONITOR, Role.STATISTICIAN_BLINDED, Role.CLINICIAN_READER):
        detail = api_client(users[role]).get(f"/api/v1/images/{image.pk}/").json()
        assert detail["original_name"] is None
        listed = api_client(users[role]).get(f"/api/v1/participants/{thyroid.pk}/images/").json()
        assert listed[0]["original_name"] is None


# --- Export ---------------------------------------------------------------------------------


def test_it_exports_the_deidentified_files_with_a_manifest(users, coordinator, thyroid):
    files = [upload_file("../secret-Jane-Doe.dcm", dicom_bytes(CINE)), upload_file("examples_palette.dcm")]
    files.append(upload_file("badVR.dcm"))
    post_files(coordinator, thyroid, files)
    accepted = list(Image.objects.filter(participant=thyroid).exclude(status=ImageStatus.REJECTED).order_by("pk"))

    response = api_client(users[Role.MONITOR]).get(f"/api/v1/participants/{thyroid.pk}/images/export.zip")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert f'filename="{thyroid.study_id}_images.zip"' in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    expected = [f"{thyroid.study_id}/{thyroid.study_id}_image-{image.pk}.dcm" for image in accepted]
    assert archive.namelist() == [*expected, "manifest.csv"]
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [row["file"] for row in manifest] == expected
    for image, row, entry in zip(accepted, manifest, expected, strict=True):
        assert hashlib.sha256(archive.read(entry)).hexdigest() == image.sha256 == row["sha256"]
        assert row["image_id"] == str(image.pk)
        assert (row["format"], row["rows"], row["columns"]) == ("dicom", str(image.rows), str(image.columns))
        assert row["frames"] == str(image.frames)
    assert manifest[0]["pixel_spacing_row_mm"].startswith("0.5104")
    everything = b"".join(archive.read(name) for name in archive.namelist()) + "".join(archive.namelist()).encode()
    assert b"Jane-Doe" not in everything and b"examples_palette" not in everything


def test_it_refuses_the_export_when_a_stored_file_was_altered(users, coordinator, thyroid):
    image = upload_one(coordinator, thyroid, "examples_palette.dcm")
    _tamper(image.file.name)

    response = api_client(users[Role.STATISTICIAN_BLINDED]).get(f"/api/v1/participants/{thyroid.pk}/images/export.zip")

    assert response.status_code == 409
    assert "stored file failed its integrity check" in response.json()["detail"]


def test_it_answers_410_for_the_export_of_a_participant_who_withdrew_their_data(users, coordinator, thyroid):
    upload_one(coordinator, thyroid, "examples_palette.dcm")
    services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=thyroid,
        withdrawn_on=timezone.localdate(),
        scope=WithdrawalScope.WITHDRAW_DATA,
        reason="Asked for their data to be removed",
    )

    monitor = api_client(users[Role.MONITOR])
    response = monitor.get(f"/api/v1/participants/{thyroid.pk}/images/export.zip")

    assert response.status_code == 410
    assert "data withdrawn" in response.json()["detail"]
    assert monitor.get(f"/api/v1/participants/{thyroid.pk}/images/").json() == []
    (result,) = post_files(coordinator, thyroid, [upload_file("examples_rgb_color.dcm")]).json()
    assert result["status"] == "rejected" and "withdrawn their data" in result["reason"]


def test_the_openapi_schema_names_the_imaging_endpoints(coordinator):
    paths = api_client(coordinator).get("/api/schema/", {"format": "json"}).json()["paths"]

    for path in [
        "/api/v1/participants/{id}/images/",
        "/api/v1/participants/{id}/images/export.zip",
        "/api/v1/images/{id}/",
        "/api/v1/images/{id}/preview.png",
        "/api/v1/images/{id}/thumbnail.png",
        "/api/v1/images/{id}/frames.png",
        "/api/v1/images/{id}/file",
    ]:
        assert path in paths, path
    assert "multipart/form-data" in paths["/api/v1/participants/{id}/images/"]["post"]["requestBody"]["content"]
