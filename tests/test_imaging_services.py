"""imaging.services.image_upload: accepted, duplicate or rejected, with the
participant's state and the uploader's site checked; the accepted-image
event sent once, after commit; nothing half-stored when storage fails."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imaging import services, storage
from imaging.models import DeidentificationRecord, Image, ImageStatus, ImagingKey, ImagingStudy
from imaging.signals import image_accepted
from tests.conftest import SYSTEM, actor_for
from tests.imaging_files import (
    jpeg_with_metadata,
    randomized,
    real_dicom,
    tiff_with_metadata,
    ultrasound_dicom,
)
from trial import services as trial_services
from trial.errors import NotAllowed, RuleViolation
from trial.models import AuditEvent, Participant, Role, WithdrawalScope


@pytest.fixture
def thyroid(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="thyroid"), coordinator)


@pytest.fixture
def cervical(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="cervical"), coordinator)


@pytest.fixture
def received() -> Iterator[list[int]]:
    """Image ids announced by image_accepted."""
    ids: list[int] = []

    def receiver(sender: Any, image_id: int, **kwargs: Any) -> None:
        ids.append(image_id)

    image_accepted.connect(receiver, weak=False, dispatch_uid="test-receiver")
    yield ids
    image_accepted.disconnect(dispatch_uid="test-receiver")


def upload(user: Any, participant: Participant, data: bytes, name: str = "scan.dcm") -> services.UploadOutcome:
    return services.image_upload(actor=actor_for(user), participant=participant, name=name, data=data)


def stored_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def test_it_accepts_stores_and_describes_an_ultrasound(coordinator: Any, thyroid: Participant) -> None:
    outcome = upload(coordinator, thyroid, real_dicom("examples_ybr_color.dcm"))
    assert outcome.status == services.ACCEPTED and outcome.reason == ""
    image = Image.objects.get()
    assert image == outcome.image
    assert image.status == ImageStatus.NEEDS_REVIEW  # Burned In Annotation not stated
    assert (image.kind, image.file_format) == ("ultrasound", "dicom")
    assert (image.frames, image.rows, image.columns, image.key_frame) == (30, 240, 320, 15)
    assert image.photometric_interpretation == "YBR_FULL_422"
    assert image.pixel_spacing_mm == (pytest.approx(0.5105, abs=1e-4), pytest.approx(0.5105, abs=1e-4))
    assert image.file.name == storage.content_name(storage.read_verified(image.file.name, image.sha256), "dcm")
    assert image.file.name.endswith(f"{image.sha256}.dcm")
    for preview in (image.preview, image.thumbnail, image.frame_strip):
        assert preview.name.startswith("previews/")
        assert preview.name in stored_files()
    assert stored_files() == {image.file.name, image.preview.name, image.thumbnail.name, image.frame_strip.name}
    assert image.study is not None and image.study.acquisition_date == dt.date(2016, 5, 3)
    assert image.study.device_manufacturer == "SonoSite, Inc."
    assert DeidentificationRecord.objects.get(image=image).uids_replaced > 0
    (event,) = events("image.accept")
    assert event.object_id == str(image.pk) and event.actor == coordinator


def test_the_same_file_twice_is_a_duplicate_of_the_first(coordinator: Any, thyroid: Participant) -> None:
    first = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
    files = stored_files()
    again = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"), name="copy.dcm")
    assert again.status == services.DUPLICATE
    assert again.image is not None and first.image is not None and again.image.pk == first.image.pk
    assert "already uploaded for this participant" in again.reason
    assert Image.objects.count() == 1
    assert stored_files() == files
    assert len(events("image.accept")) == 1


def test_the_same_file_for_another_participant_is_rejected(
    coordinator: Any, thyroid: Participant, enroll: Callable[..., Participant]
) -> None:
    upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
    other = randomized(enroll(indication="thyroid"), coordinator)
    outcome = upload(coordinator, other, real_dicom("examples_rgb_color.dcm"))
    assert outcome.status == services.REJECTED
    assert "already uploaded for another participant" in outcome.reason
    assert outcome.image is not None and outcome.image.participant == other
    assert outcome.image.status == ImageStatus.REJECTED
    assert Image.objects.exclude(status=ImageStatus.REJECTED).count() == 1


def test_a_participant_not_yet_randomized_gets_no_images(
    coordinator: Any, enroll: Callable[..., Participant], block_scheme: Any
) -> None:
    participant = enroll(indication="thyroid")
    outcome = upload(coordinator, participant, real_dicom("examples_rgb_color.dcm"))
    assert outcome.status == services.REJECTED
    assert outcome.reason == f"{participant.study_id} is not randomized yet; images are accepted after randomization."
    assert stored_files() == set()


@pytest.mark.parametrize(
    ("scope", "reason"),
    [
        (WithdrawalScope.STOP_FOLLOW_UP, "has stopped follow-up"),
        (WithdrawalScope.STOP_AI_PROCESSING, "has withdrawn from AI processing"),
        (WithdrawalScope.WITHDRAW_DATA, "has withdrawn their data"),
    ],
)
def test_a_withdrawn_participant_gets_no_images(
    coordinator: Any, thyroid: Participant, scope: str, reason: str
) -> None:
    trial_services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=thyroid,
        withdrawn_on=timezone.localdate(),
        scope=scope,
        reason="Participant's request",
    )
    outcome = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
    assert outcome.status == services.REJECTED
    assert outcome.reason.startswith(f"{thyroid.study_id} {reason}")
    assert stored_files() == set()
    assert not Image.objects.exclude(status=ImageStatus.REJECTED).exists()


def test_a_photo_for_a_thyroid_participant_is_rejected(coordinator: Any, thyroid: Participant) -> None:
    outcome = upload(coordinator, thyroid, jpeg_with_metadata(), name="photo.jpg")
    assert outcome.status == services.REJECTED
    assert outcome.reason == (
        "An photograph image does not fit a thyroid participant (thyroid participants need ultrasound)."
    )


def test_an_ultrasound_for_a_colposcopy_participant_is_rejected(coordinator: Any, cervical: Participant) -> None:
    outcome = upload(coordinator, cervical, real_dicom("examples_rgb_color.dcm"))
    assert outcome.status == services.REJECTED
    assert "does not fit a cervical participant (colposcopy needs photographs)" in outcome.reason


@pytest.mark.parametrize("who", ["coordinator_b", "reader"])
def test_only_an_uploader_at_the_participants_site_may_upload(
    who: str, coordinator_b: Any, users: dict[str, Any], thyroid: Participant
) -> None:
    user = coordinator_b if who == "coordinator_b" else users[Role.CLINICIAN_READER]
    before = AuditEvent.objects.count()
    with pytest.raises(NotAllowed):
        upload(user, thyroid, real_dicom("examples_rgb_color.dcm"))
    assert not Image.objects.exists()
    assert AuditEvent.objects.count() == before
    assert stored_files() == set()


def test_the_file_type_is_read_from_the_bytes_not_the_name(
    coordinator: Any, thyroid: Participant, cervical: Participant
) -> None:
    dicom = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"), name="holiday.jpg")
    assert dicom.image is not None and dicom.image.file_format == "dicom"
    assert dicom.image.file.name.endswith(".dcm")
    photo = upload(coordinator, cervical, jpeg_with_metadata(), name="scan.dcm")
    assert photo.image is not None and photo.image.file_format == "jpeg"
    assert photo.image.file.name.endswith(".jpg")


def test_a_tiff_is_stored_as_png(coordinator: Any, cervical: Participant) -> None:
    outcome = upload(coordinator, cervical, tiff_with_metadata(), name="cervix.tif")
    assert outcome.status == services.ACCEPTED
    image = outcome.image
    assert image is not None and image.file_format == "tiff"
    assert image.file.name.endswith(".png")
    assert storage.read_verified(image.file.name, image.sha256).startswith(b"\x89PNG\r\n\x1a\n")


def test_it_rejects_a_file_over_the_configured_size_limit(
    coordinator: Any, thyroid: Participant, settings: Any
) -> None:
    settings.IMAGING_MAX_UPLOAD_BYTES = 1000
    outcome = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
    assert outcome.status == services.REJECTED
    assert "over the limit of 1,000 bytes" in outcome.reason


def test_a_rejection_is_recorded_with_its_reason(coordinator: Any, thyroid: Participant) -> None:
    outcome = upload(coordinator, thyroid, b"not an image at all", name="notes.txt")
    image = Image.objects.get()
    assert outcome.image == image
    assert image.status == ImageStatus.REJECTED
    assert image.rejection_reason.startswith("Unrecognised file type")
    assert (image.original_name, image.size_bytes, image.file.name, image.sha256) == ("notes.txt", 19, "", "")
    (event,) = events("image.reject")
    assert event.object_id == str(image.pk)
    assert event.after is not None and event.after["reason"] == image.rejection_reason


def test_image_accepted_is_sent_once_and_only_after_commit(
    coordinator: Any,
    thyroid: Participant,
    received: list[int],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            outcome = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
            assert received == []
        assert received == []  # not committed yet
    assert outcome.image is not None
    assert received == [outcome.image.pk]
    assert len(callbacks) == 1


def test_image_accepted_is_not_sent_for_duplicates_or_rejections(
    coordinator: Any,
    thyroid: Participant,
    received: list[int],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        first = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
        upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
        upload(coordinator, thyroid, jpeg_with_metadata(), name="photo.jpg")
        second = upload(coordinator, thyroid, real_dicom("examples_palette.dcm"))
    assert first.image is not None and second.image is not None
    assert received == [first.image.pk, second.image.pk]


def test_image_accepted_is_not_sent_when_the_transaction_rolls_back(
    coordinator: Any,
    thyroid: Participant,
    received: list[int],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
                raise RuntimeError("the caller's transaction fails")
        except RuntimeError:
            pass
    assert received == [] and callbacks == []


def test_a_stored_file_altered_on_disk_is_detected_on_read(coordinator: Any, thyroid: Participant) -> None:
    outcome = upload(coordinator, thyroid, real_dicom("examples_rgb_color.dcm"))
    image = outcome.image
    assert image is not None
    path = Path(settings.MEDIA_ROOT) / image.file.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(storage.StoredFileCorrupt, match="does not match its sha256"):
        storage.read_verified(image.file.name, image.sha256)


def test_a_failure_while_storing_leaves_no_files_and_no_rows(
    coordinator: Any, thyroid: Participant, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = storage.store
    calls: list[str] = []

    def failing_store(data: bytes, extension: str, folder: str = "images") -> tuple[str, bool]:
        calls.append(folder)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_store(data, extension, folder)

    monkeypatch.setattr(storage, "store", failing_store)
    with pytest.raises(RuleViolation, match="could not be stored"):
        upload(coordinator, thyroid, real_dicom("examples_ybr_color.dcm"))
    assert len(calls) == 2  # the image was written, the first preview failed
    assert stored_files() == set()
    assert not Image.objects.exists()
    assert not ImagingStudy.objects.exists()
    assert not DeidentificationRecord.objects.exists()
    assert not ImagingKey.objects.exists()
    assert events("image.accept") == []


def _stored_pixels(image: Image) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(storage.read_verified(image.file.name, image.sha256))).pixel_array


def test_burned_in_annotation_without_a_rule_needs_review(coordinator: Any, thyroid: Participant) -> None:
    outcome = upload(coordinator, thyroid, ultrasound_dicom(burned_in_annotation="YES"))
    assert outcome.status == services.ACCEPTED
    assert outcome.image is not None and outcome.image.status == ImageStatus.NEEDS_REVIEW
    assert outcome.warnings and "Burned In Annotation" in outcome.warnings[0]
    assert _stored_pixels(outcome.image)[:10].any()  # nothing blanked


def test_a_blanking_rule_blanks_the_header_band_instead_of_review(coordinator: Any, thyroid: Participant) -> None:
    services.blanking_rule_set(
        actor=SYSTEM, trial=thyroid.trial, manufacturer="Acme Ultrasound", model="Sono 9", header_rows=12
    )
    outcome = upload(coordinator, thyroid, ultrasound_dicom(burned_in_annotation="YES"))
    image = outcome.image
    assert image is not None and image.status == ImageStatus.ACCEPTED
    pixels = _stored_pixels(image)
    assert not pixels[:12].any()
    assert pixels[12:].any()
    record = DeidentificationRecord.objects.get(image=image)
    assert record.header_band_blanked and record.burned_in_annotation == "YES"


def test_a_blanking_rule_blanks_every_frame_of_a_real_cine(coordinator: Any, thyroid: Participant) -> None:
    services.blanking_rule_set(
        actor=SYSTEM, trial=thyroid.trial, manufacturer="SonoSite, Inc.", model="Turbo", header_rows=40
    )
    outcome = upload(coordinator, thyroid, real_dicom("examples_ybr_color.dcm"))
    assert outcome.image is not None
    pixels = _stored_pixels(outcome.image)
    assert pixels.shape == (30, 240, 320, 3)
    assert not pixels[:, :40].any()
    assert pixels[:, 40:].any()


def test_only_a_trial_manager_sets_a_blanking_rule(coordinator: Any, thyroid: Participant) -> None:
    with pytest.raises(NotAllowed):
        services.blanking_rule_set(
            actor=actor_for(coordinator), trial=thyroid.trial, manufacturer="Acme", model="X", header_rows=10
        )
    with pytest.raises(RuleViolation, match="between 1 and 2000 rows"):
        services.blanking_rule_set(actor=SYSTEM, trial=thyroid.trial, manufacturer="Acme", model="X", header_rows=0)
