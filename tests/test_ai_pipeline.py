"""The AI inference pipeline inside one process: an accepted image queues its
result and a job on the inference queue (the in-memory broker, which no
worker reads), and the tests play the worker by calling ai_engine.jobs or
running the task eagerly. Covers claiming and micro-batching, exports,
redelivery, bad input, transient errors and retries, takeover of abandoned
work, withdrawal, the outbox sweeper, the CPU fallback and a change of model
after recruitment opened."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import pydicom
import pytest
import torch
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone
from PIL import Image as PILImage

from ai_engine import jobs, selectors, services, tasks
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from ai_engine.synthetic import colposcopy_frame, thyroid_frame
from config.celery import app as celery_app
from imaging import services as imaging_services
from imaging import storage
from imaging.models import Image, ImageStatus
from imaging.pipeline import dicom
from tests.celery_worker import publishing_to
from tests.conftest import actor_for
from tests.imaging_files import ct_dicom, randomized, to_bytes, ultrasound_dataset
from tests.torch_threads import one_torch_thread
from trial.audit import verify_chain
from trial.errors import RuleViolation
from trial.models import AuditEvent, Participant, Trial, WithdrawalScope
from trial.services import participant_withdraw
from trial.signals import ai_processing_withdrawn

pytestmark = pytest.mark.django_db

ROWS, COLUMNS = 120, 160  # not the network's 128 × 128: masks must come back at the image's own size
SPACING_MM = (0.1, 0.2)  # (row, column)
INFERENCE = tasks.INFERENCE_QUEUE
CLOSED_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: the broker is down


# --- Set-up --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _pipeline_settings(settings: Any) -> Iterator[None]:
    """CPU inference on one torch thread, a fresh engine cache (engines are
    cached per process by checkpoint; a test may change AI_DEVICE) and an
    empty inference queue."""
    settings.AI_DEVICE = "cpu"
    settings.AI_TORCH_THREADS = 1
    settings.AI_INFERENCE_MAX_BATCH = 8
    settings.AI_INFERENCE_LEASE_SECONDS = 600
    settings.AI_INFERENCE_REDISPATCH_SECONDS = 900
    jobs._engines.clear()
    drain()
    with one_torch_thread():
        yield
    jobs._engines.clear()
    drain()


def drain() -> list[tuple[str, list[Any]]]:
    """Take every job off the in-memory inference queue: (task name, args), in order."""
    found: list[tuple[str, list[Any]]] = []
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_declare(queue=INFERENCE, durable=True, auto_delete=False)
        while (message := channel.basic_get(INFERENCE, no_ack=True)) is not None:
            args, _kwargs, _embed = message.decode()
            found.append((message.headers["task"], list(args)))
    return found


def jobs_sent() -> list[int]:
    """The result ids of the inference jobs on the queue (taken off it)."""
    sent = drain()
    assert {name for name, _ in sent} <= {"ai_engine.run_inference"}, sent
    return [args[0] for _, args in sent]


def waiting_messages() -> int:
    with celery_app.connection_for_write() as connection:
        return int(connection.default_channel.queue_declare(queue=INFERENCE, passive=True).message_count)


def thyroid_dicom(seed: int, *, pixel_spacing: bool = False) -> bytes:
    """A grey ultrasound DICOM of a synthetic thyroid with a nodule, 120 × 160,
    calibrated as ultrasound machines do (an ultrasound region in cm per
    pixel) or, with pixel_spacing, by a Pixel Spacing attribute."""
    frame = thyroid_frame(np.random.default_rng(seed), 128)
    pixels = np.asarray(PILImage.fromarray(frame.image).resize((COLUMNS, ROWS)))
    dataset = ultrasound_dataset(rows=ROWS, columns=COLUMNS, monochrome_bits=8, seed=seed)
    dataset.set_pixel_data(pixels, "MONOCHROME2", 8)
    if pixel_spacing:
        dataset.PixelSpacing = [str(SPACING_MM[0]), str(SPACING_MM[1])]
    else:
        region = pydicom.Dataset()
        region.RegionSpatialFormat = 1  # 2D
        region.RegionDataType = 1  # tissue
        region.RegionFlags = 0
        region.RegionLocationMinX0 = 0
        region.RegionLocationMinY0 = 0
        region.RegionLocationMaxX1 = COLUMNS - 1
        region.RegionLocationMaxY1 = ROWS - 1
        region.PhysicalUnitsXDirection = 3  # cm
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = SPACING_MM[1] / 10
        region.PhysicalDeltaY = SPACING_MM[0] / 10
        dataset.SequenceOfUltrasoundRegions = [region]
    return to_bytes(dataset)


def colposcopy_png(seed: int) -> bytes:
    """A synthetic colposcopy photograph (acetowhite lesions), 120 × 160 PNG."""
    frame = colposcopy_frame(np.random.default_rng(seed), 128)
    buffer = io.BytesIO()
    PILImage.fromarray(frame.image).resize((COLUMNS, ROWS)).save(buffer, format="PNG")
    return buffer.getvalue()


def deploy(trial: Trial, admin: Any, path: Path, *, name: str, version: str, indication: str) -> ModelVersion:
    """Register a checkpoint and deploy it (recruitment is open: the admin path with a reason)."""
    model_version = services.model_register(
        actor=services.AI_ENGINE, path=path, name=name, version=version, indication=indication
    )
    services.model_activate(
        actor=actor_for(admin), trial=trial, model_version=model_version, reason="Deployed for the test"
    )
    return model_version


@pytest.fixture
def thyroid_model(recruiting: Trial, users: dict[str, Any]) -> ModelVersion:
    return deploy(
        recruiting,
        users["trial_admin"],
        services.SHIPPED_CHECKPOINTS["thyroid"],
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )


@pytest.fixture
def cervical_model(recruiting: Trial, users: dict[str, Any]) -> ModelVersion:
    return deploy(
        recruiting,
        users["trial_admin"],
        services.SHIPPED_CHECKPOINTS["cervical"],
        name="combined-colposcopy-synthetic",
        version="1.0",
        indication="cervical",
    )


@pytest.fixture
def participant_for(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Callable[..., Any]:
    def make(indication: str = "thyroid") -> Participant:
        return randomized(enroll(indication=indication), coordinator)

    return make


@pytest.fixture
def thyroid_participant(participant_for: Callable[..., Participant]) -> Participant:
    return participant_for("thyroid")


@pytest.fixture
def send(coordinator: Any, django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Upload as the site's coordinator; the upload's on-commit work (the
    image_accepted signal, hence the AI job) runs when it returns."""

    def upload(participant: Participant, data: bytes, name: str = "scan.dcm") -> imaging_services.UploadOutcome:
        with django_capture_on_commit_callbacks(execute=True):
            return imaging_services.image_upload(
                actor=actor_for(coordinator), participant=participant, name=name, data=data
            )

    return upload


@pytest.fixture
def upload(send: Callable[..., imaging_services.UploadOutcome]) -> Callable[..., Image]:
    """Upload a file that must be accepted; returns its image."""

    def accepted(participant: Participant, data: bytes, name: str = "scan.dcm") -> Image:
        outcome = send(participant, data, name)
        assert outcome.status == "accepted", outcome.reason
        assert outcome.image is not None and outcome.image.is_usable
        return outcome.image

    return accepted


def result_of(image: Image) -> AiResult:
    return AiResult.objects.select_related("image", "model_version").get(image=image)


def fresh(result: AiResult) -> AiResult:
    return AiResult.objects.select_related("image", "model_version").get(pk=result.pk)


def events(action: str, result: AiResult | None = None) -> list[AuditEvent]:
    found = AuditEvent.objects.filter(action=action)
    if result is not None:
        found = found.filter(object_type="ai_engine.airesult", object_id=str(result.pk))
    return list(found.order_by("sequence"))


def result_files() -> set[Path]:
    folder = Path(settings.MEDIA_ROOT) / services.RESULT_FOLDER
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def withdraw(participant: Participant, by: Any, scope: str, reason: str = "Asked to stop") -> None:
    participant_withdraw(
        actor=actor_for(by), participant=participant, withdrawn_on=timezone.localdate(), scope=scope, reason=reason
    )


def dead_pid() -> int:
    """The id of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- Upload queues the work -----------------------------------------------------------


def test_an_accepted_upload_queues_one_result_and_one_job(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0))

    [result] = AiResult.objects.filter(image=image)
    assert result.model_version_id == thyroid_model.pk
    assert (result.status, result.attempts, result.claimed_by) == (AiResultStatus.QUEUED, 0, "")
    assert result.dispatched_at is not None
    assert waiting_messages() == 1
    assert jobs_sent() == [result.pk]
    [event] = events("ai_result.queue", result)
    assert event.actor_username == "system:ai-engine"
    assert event.after is not None and event.after["model_sha256"] == thyroid_model.sha256
    assert event.after["image"] == image.pk and event.after["status"] == "queued"


def test_without_a_deployed_model_the_upload_is_accepted_and_nothing_is_queued(
    recruiting: Trial, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0))

    assert image.status in (ImageStatus.ACCEPTED, ImageStatus.NEEDS_REVIEW)
    assert not AiResult.objects.exists()
    assert jobs_sent() == [] and events("ai_result.queue") == []


def test_a_rejected_image_or_a_duplicate_queues_nothing_new(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    send: Callable[..., imaging_services.UploadOutcome],
) -> None:
    data = thyroid_dicom(0)
    image = upload(thyroid_participant, data)
    assert jobs_sent() == [result_of(image).pk]

    rejected = send(thyroid_participant, ct_dicom(), "ct.dcm")
    duplicate = send(thyroid_participant, data)

    assert rejected.status == "rejected" and rejected.image is not None
    assert rejected.image.status == ImageStatus.REJECTED
    assert duplicate.status == "duplicate" and duplicate.image is not None and duplicate.image.pk == image.pk
    assert AiResult.objects.count() == 1 and len(events("ai_result.queue")) == 1
    assert jobs_sent() == []
    # Asked directly, a rejected image is not given to the AI either.
    assert jobs.queue_image(rejected.image.pk) is None
    assert AiResult.objects.count() == 1


# --- A job runs to a stored result ------------------------------------------------------


def test_a_dicom_job_stores_mask_figures_and_a_dicom_segmentation(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0))
    queued = result_of(image)
    assert (image.rows, image.columns) == (ROWS, COLUMNS)
    assert image.pixel_spacing_mm == pytest.approx(SPACING_MM)

    [finished] = jobs.process(queued.pk)

    result = fresh(finished)
    assert result.pk == queued.pk and result.status == AiResultStatus.DONE, result.reason
    assert (result.attempts, result.batch_size, result.device) == (1, 1, "cpu")
    assert result.model_version.sha256 == thyroid_model.sha256
    assert result.claimed_by == jobs.worker_identity() and result.lease_expires_at is None
    assert result.started_at is not None and result.finished_at is not None and result.runtime_ms
    # The mask, at the image's own size, as stored and as read back.
    raw = PILImage.open(io.BytesIO(storage.read_verified(result.mask.name, result.mask_sha256)))
    assert raw.size == (COLUMNS, ROWS)
    mask = selectors.ai_result_mask(result)
    assert mask.shape == (ROWS, COLUMNS) and mask.any()
    probability = selectors.ai_result_probability(result)
    assert probability.shape == (ROWS, COLUMNS) and probability.dtype == np.float16
    assert (probability[mask > 0] >= 0.5).all() and float(probability.max()) <= 1.0
    measurements = result.measurements
    assert measurements["lesion_count"] >= 1 and measurements["total_area_px"] == int(mask.sum())
    assert measurements["total_area_mm2"] == pytest.approx(
        measurements["total_area_px"] * SPACING_MM[0] * SPACING_MM[1]
    )
    assert result.category in thyroid_model.categories and result.category_probability is not None
    # The DICOM Segmentation opens and lies on the stored (de-identified) source.
    source = pydicom.dcmread(io.BytesIO(storage.read_verified(image.file.name, image.sha256)))
    assert result.segmentation and result.export_note == ""
    segmentation = highdicom.seg.segread(
        io.BytesIO(storage.read_verified(result.segmentation.name, result.segmentation_sha256))
    )
    assert (segmentation.Rows, segmentation.Columns) == (source.Rows, source.Columns) == (ROWS, COLUMNS)
    referenced = segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert segmentation.StudyInstanceUID == source.StudyInstanceUID
    assert np.array_equal(segmentation.pixel_array.astype(bool).reshape(mask.shape), mask > 0)
    overlay = PILImage.open(io.BytesIO(storage.read_verified(result.overlay.name, result.overlay_sha256)))
    assert overlay.size == (COLUMNS, ROWS)
    drawn, grey = np.asarray(overlay), dicom.to_display(source, dicom.decode(source))[0]
    assert np.array_equal(drawn[mask == 0], np.repeat(grey[..., None], 3, axis=2)[mask == 0])
    # Audited: queued, started, stored, naming the checkpoint, then the
    # exports attached (after the result was stored); the chain holds.
    [start] = events("ai_result.start", result)
    [store] = events("ai_result.store", result)
    [export] = events("ai_result.export", result)
    assert start.before == {"status": "queued"} and store.before == {"status": "running"}
    assert store.after is not None and store.after["status"] == "done"
    assert store.after["model_sha256"] == thyroid_model.sha256 and store.after["device"] == "cpu"
    assert "segmentation_sha256" not in store.after and store.after["worker"] == jobs.worker_identity()
    assert export.sequence > store.sequence and export.after is not None
    assert export.after["segmentation_sha256"] == result.segmentation_sha256
    assert export.after["overlay_sha256"] == result.overlay_sha256
    assert verify_chain().ok


def test_a_photograph_gets_an_overlay_and_no_segmentation(
    cervical_model: ModelVersion, participant_for: Callable[..., Participant], upload: Callable[..., Image]
) -> None:
    participant = participant_for("cervical")
    image = upload(participant, colposcopy_png(3), "cervix.png")
    queued = result_of(image)
    assert queued.model_version_id == cervical_model.pk

    [finished] = jobs.process(queued.pk)

    result = fresh(finished)
    assert result.status == AiResultStatus.DONE, result.reason
    assert result.model_version.sha256 == cervical_model.sha256 and result.device == "cpu"
    mask = selectors.ai_result_mask(result)
    assert mask.shape == (ROWS, COLUMNS) and mask.any()
    assert not result.segmentation and result.segmentation_sha256 == "" and result.export_note == ""
    overlay = PILImage.open(io.BytesIO(storage.read_verified(result.overlay.name, result.overlay_sha256)))
    assert overlay.size == (COLUMNS, ROWS) and overlay.mode == "RGB"
    photo = np.asarray(PILImage.open(io.BytesIO(storage.read_verified(image.file.name, image.sha256))).convert("RGB"))
    drawn = np.asarray(overlay)
    assert drawn.shape == photo.shape
    assert (drawn[mask > 0] != photo[mask > 0]).any()  # the lesion is drawn on the photograph
    assert np.array_equal(drawn[mask == 0], photo[mask == 0])  # and nothing else changes
    assert [len(events(action, result)) for action in ("ai_result.start", "ai_result.store")] == [1, 1]
    assert verify_chain().ok


# --- Redelivery -------------------------------------------------------------------------


def test_a_redelivered_job_changes_nothing(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    [done] = jobs.process(result.pk)
    before = AiResult.objects.filter(pk=result.pk).values().get()
    files, audited = result_files(), AuditEvent.objects.count()

    assert jobs.process(result.pk) == []

    assert AiResult.objects.filter(pk=result.pk).values().get() == before
    assert fresh(done).attempts == 1 and len(events("ai_result.store")) == 1
    assert result_files() == files and AuditEvent.objects.count() == audited


def test_the_eager_task_twice_gives_one_result(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))

    first = tasks.run_inference.apply(args=[result.pk])
    second = tasks.run_inference.apply(args=[result.pk])

    assert (first.get(), second.get()) == (1, 0)
    assert AiResult.objects.count() == 1
    result = fresh(result)
    assert (result.status, result.attempts) == (AiResultStatus.DONE, 1)
    assert len(events("ai_result.start")) == 1 and len(events("ai_result.store")) == 1


def test_a_job_for_a_result_that_does_not_exist_does_nothing(db: Any) -> None:
    assert jobs.process(987654) == []
    assert tasks.run_inference.apply(args=[987654]).get() == 0


# --- Micro-batching -------------------------------------------------------------------------


def test_one_job_finishes_every_waiting_result_of_its_model_in_one_pass(
    thyroid_model: ModelVersion, participant_for: Callable[..., Participant], upload: Callable[..., Image]
) -> None:
    first_participant, second_participant = participant_for(), participant_for()
    images = [
        upload(first_participant, thyroid_dicom(0)),
        upload(second_participant, thyroid_dicom(1)),
        upload(first_participant, thyroid_dicom(2)),
    ]
    results = [result_of(image) for image in images]
    assert jobs_sent() == [result.pk for result in results]

    finished = jobs.process(results[0].pk, batch_limit=8)

    assert sorted(result.pk for result in finished) == sorted(result.pk for result in results)
    for result in map(fresh, results):
        assert (result.status, result.batch_size, result.attempts) == (AiResultStatus.DONE, 3, 1), result.reason
        assert result.model_version_id == thyroid_model.pk
    assert len(events("ai_result.store")) == 3
    # The other two jobs, delivered later, find their work done.
    assert jobs.process(results[1].pk) == [] and jobs.process(results[2].pk) == []
    assert len(events("ai_result.start")) == 3


def test_a_batch_limit_of_one_finishes_only_its_own_result(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    results = [result_of(upload(thyroid_participant, thyroid_dicom(seed))) for seed in range(3)]

    [finished] = jobs.process(results[1].pk, batch_limit=1)

    assert finished.pk == results[1].pk
    states = [(r.status, r.batch_size, r.attempts) for r in map(fresh, results)]
    assert states == [(AiResultStatus.QUEUED, None, 0), (AiResultStatus.DONE, 1, 1), (AiResultStatus.QUEUED, None, 0)]


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["altered", "missing"])
def test_a_damaged_stored_image_fails_once(
    damage: str, thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0))
    result = result_of(image)
    path = Path(settings.MEDIA_ROOT) / image.file.name
    if damage == "altered":
        path.write_bytes(b"not the image that was stored")
    else:
        path.unlink()

    [failed] = jobs.process(result.pk)

    failed = fresh(failed)
    assert failed.status == AiResultStatus.FAILED and failed.reason.startswith("bad-input:")
    assert ("integrity" if damage == "altered" else "missing") in failed.reason
    assert failed.attempts == 1 and not failed.mask and result_files() == set()
    [event] = events("ai_result.fail", failed)
    assert event.reason == failed.reason
    # A second delivery does nothing: the input will not get better.
    assert jobs.process(result.pk) == []
    assert tasks.run_inference.apply(args=[result.pk]).get() == 0
    again = fresh(failed)
    assert (again.status, again.attempts, again.reason) == (AiResultStatus.FAILED, 1, failed.reason)
    assert len(events("ai_result.start")) == 1


def test_pixels_that_do_not_decode_fail_with_their_reason(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0))
    result = result_of(image)
    # Bytes that pass the integrity check (the digest is made to match) but are no DICOM.
    garbage = b"\x00" * 128 + b"DICM" + b"\x07" * 64
    (Path(settings.MEDIA_ROOT) / image.file.name).write_bytes(garbage)
    Image.objects.filter(pk=image.pk).update(sha256=hashlib.sha256(garbage).hexdigest())

    [failed] = jobs.process(result.pk)

    assert failed.status == AiResultStatus.FAILED
    assert failed.reason.startswith("bad-input: the stored image does not decode"), failed.reason


def test_a_bad_image_in_a_batch_fails_alone(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    images = [upload(thyroid_participant, thyroid_dicom(seed)) for seed in range(2)]
    (Path(settings.MEDIA_ROOT) / images[1].file.name).write_bytes(b"damaged")

    finished = jobs.process(result_of(images[0]).pk)

    states = {result.image_id: result.status for result in finished}
    assert states == {images[0].pk: AiResultStatus.DONE, images[1].pk: AiResultStatus.FAILED}
    assert fresh(result_of(images[0])).batch_size == 2


# --- Transient errors -----------------------------------------------------------------------


def database_down(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("could not connect to server: Connection refused")


def test_a_transient_error_gives_the_result_back_to_the_queue(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    monkeypatch.setattr(jobs, "engine_for", database_down)

    with pytest.raises(OperationalError, match="Connection refused"):
        jobs.process(result.pk)

    back = fresh(result)
    assert (back.status, back.attempts, back.claimed_by, back.lease_expires_at) == (AiResultStatus.QUEUED, 1, "", None)
    assert back.reason.startswith("transient: OperationalError: could not connect")
    [event] = events("ai_result.release", back)
    assert event.before == {"status": "running"} and event.reason == back.reason
    assert events("ai_result.fail") == [] and result_files() == set()


def test_a_storage_error_midway_gives_back_only_what_is_unfinished(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = [result_of(upload(thyroid_participant, thyroid_dicom(seed))) for seed in range(2)]
    real_store = services.ai_result_store
    stored: list[int] = []

    def store_once(*, result: AiResult, **kwargs: Any) -> AiResult:
        if stored:
            raise OSError(28, "No space left on device")
        stored.append(result.pk)
        return real_store(result=result, **kwargs)

    monkeypatch.setattr(services, "ai_result_store", store_once)
    with pytest.raises(OSError, match="No space left"):
        jobs.process(results[0].pk)

    first, second = fresh(results[0]), fresh(results[1])
    assert first.status == AiResultStatus.DONE and stored == [first.pk]
    assert (second.status, second.attempts) == (AiResultStatus.QUEUED, 1)
    assert [event.object_id for event in events("ai_result.release")] == [str(second.pk)]
    monkeypatch.setattr(services, "ai_result_store", real_store)
    [retried] = jobs.process(second.pk)
    assert (retried.status, fresh(retried).attempts) == (AiResultStatus.DONE, 2)


def test_the_task_fails_the_result_when_the_retries_are_spent(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    monkeypatch.setattr(jobs, "engine_for", database_down)
    monkeypatch.setattr(jobs, "backoff_seconds", lambda retries: 0.0)

    tasks.run_inference.apply(args=[result.pk])

    failed = fresh(result)
    attempts = tasks.run_inference.max_retries + 1
    assert tasks.run_inference.max_retries == settings.AI_INFERENCE_MAX_RETRIES
    assert failed.status == AiResultStatus.FAILED
    assert failed.reason.startswith("failed after retries: OperationalError: could not connect"), failed.reason
    assert failed.attempts == attempts
    assert len(events("ai_result.release", failed)) == attempts and len(events("ai_result.fail", failed)) == 1
    # Nothing more happens on a late delivery.
    assert jobs.process(result.pk) == [] and fresh(result).attempts == attempts


def test_a_transient_error_that_clears_ends_done(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    real_engine_for = jobs.engine_for
    calls: list[int] = []

    def flaky(model_version: ModelVersion) -> Any:
        calls.append(model_version.pk)
        if len(calls) == 1:
            database_down()
        return real_engine_for(model_version)

    monkeypatch.setattr(jobs, "engine_for", flaky)
    monkeypatch.setattr(jobs, "backoff_seconds", lambda retries: 0.0)

    assert tasks.run_inference.apply(args=[result.pk]).get() == 1

    done = fresh(result)
    assert (done.status, done.attempts, done.reason) == (AiResultStatus.DONE, 2, "")
    assert len(calls) == 2
    assert len(events("ai_result.release", done)) == 1 and len(events("ai_result.store", done)) == 1


def test_the_backoff_grows_exponentially_to_its_ceiling(settings: Any) -> None:
    settings.AI_INFERENCE_RETRY_BASE_SECONDS = 2
    settings.AI_INFERENCE_RETRY_MAX_SECONDS = 120
    assert [jobs.backoff_seconds(retries) for retries in range(8)] == [2, 4, 8, 16, 32, 64, 120, 120]


# --- Takeover of abandoned work ---------------------------------------------------------


def claimed_by(result: AiResult, worker: str, *, lease_ended: bool = False) -> AiResult:
    """The result as a worker `worker` left it: running under a lease."""
    running = services.ai_result_start(result=result, claimed_by=worker, lease_seconds=600, batch_size=1)
    if lease_ended:
        AiResult.objects.filter(pk=result.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    return running


def test_a_result_of_a_dead_process_on_this_host_is_taken_over(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    gone = f"{socket.gethostname()}:{dead_pid()}"
    claimed_by(result, gone)

    [done] = jobs.process(result.pk)

    done = fresh(done)
    assert (done.status, done.attempts, done.claimed_by) == (AiResultStatus.DONE, 2, jobs.worker_identity())
    assert [event.after["worker"] for event in events("ai_result.start", done) if event.after] == [
        gone,
        jobs.worker_identity(),
    ]


@pytest.mark.parametrize("owner", ["otherhost:123", "alive here"])
def test_a_result_running_in_a_live_worker_is_left_alone(
    owner: str, thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    worker = "otherhost:123" if owner == "otherhost:123" else f"{socket.gethostname()}:{os.getppid()}"
    claimed_by(result, worker)
    before = AiResult.objects.filter(pk=result.pk).values().get()

    assert jobs.process(result.pk) == []
    assert tasks.run_inference.apply(args=[result.pk]).get() == 0

    assert AiResult.objects.filter(pk=result.pk).values().get() == before
    assert len(events("ai_result.start")) == 1 and events("ai_result.store") == []


def test_a_result_whose_lease_ended_is_taken_over(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    claimed_by(result, "otherhost:123", lease_ended=True)

    [done] = jobs.process(result.pk)

    done = fresh(done)
    assert (done.status, done.attempts, done.claimed_by) == (AiResultStatus.DONE, 2, jobs.worker_identity())


# --- Withdrawal -------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [WithdrawalScope.STOP_AI_PROCESSING, WithdrawalScope.WITHDRAW_DATA])
def test_withdrawal_cancels_pending_work_in_its_transaction(
    scope: str,
    thyroid_model: ModelVersion,
    participant_for: Callable[..., Participant],
    upload: Callable[..., Image],
    coordinator: Any,
) -> None:
    participant, other = participant_for(), participant_for()
    finished = result_of(upload(participant, thyroid_dicom(0)))
    [done] = jobs.process(finished.pk, batch_limit=1)
    queued = result_of(upload(participant, thyroid_dicom(1)))
    running = claimed_by(result_of(upload(participant, thyroid_dicom(2))), "otherhost:123")
    others = result_of(upload(other, thyroid_dicom(3)))
    done_before = AiResult.objects.filter(pk=done.pk).values().get()

    withdraw(participant, coordinator, scope, reason="Does not want the AI to read her images")

    for result in (queued, running):
        cancelled = fresh(result)
        assert cancelled.status == AiResultStatus.CANCELLED
        assert (
            cancelled.reason == "The participant withdrew from AI processing: Does not want the AI to read her images"
        )
        assert (cancelled.claimed_by, cancelled.lease_expires_at) == ("", None) and cancelled.finished_at
        [event] = events("ai_result.cancel", cancelled)
        assert event.actor_username == coordinator.username and event.actor_id == coordinator.pk
        assert event.role == "coordinator" and event.after is not None and event.after["status"] == "cancelled"
    assert events("ai_result.cancel", fresh(queued))[0].before == {"status": "queued"}
    assert events("ai_result.cancel", fresh(running))[0].before == {"status": "running"}
    assert AiResult.objects.filter(pk=done.pk).values().get() == done_before
    assert fresh(others).status == AiResultStatus.QUEUED
    assert len(events("ai_result.cancel")) == 2
    # Later deliveries do nothing, and other participants' work goes on.
    files = result_files()
    for result in (queued, running):
        assert jobs.process(result.pk) == []
        assert fresh(result).status == AiResultStatus.CANCELLED
    assert result_files() == files
    [other_done] = jobs.process(others.pk)
    assert other_done.status == AiResultStatus.DONE and other_done.pk == others.pk
    assert verify_chain().ok


def test_a_withdrawal_that_fails_cancels_nothing(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image], coordinator: Any
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))

    def fail_after_the_ai_engine(sender: Any, **kwargs: Any) -> None:
        assert fresh(result).status == AiResultStatus.CANCELLED  # the AI engine's receiver ran first
        raise RuntimeError("a later step of the withdrawal failed")

    ai_processing_withdrawn.connect(fail_after_the_ai_engine, dispatch_uid="test-fail-after-ai-engine")
    try:
        with pytest.raises(RuntimeError, match="later step"):
            withdraw(thyroid_participant, coordinator, WithdrawalScope.STOP_AI_PROCESSING)
    finally:
        ai_processing_withdrawn.disconnect(dispatch_uid="test-fail-after-ai-engine")

    assert fresh(result).status == AiResultStatus.QUEUED
    assert events("ai_result.cancel") == [] and events("participant.withdraw") == []
    thyroid_participant.refresh_from_db()
    assert thyroid_participant.accepts_ai_processing


def test_a_withdrawal_during_inference_keeps_nothing(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    coordinator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    real_load_input = jobs.load_input

    def withdrawal_lands_meanwhile(image: Image) -> jobs.Loaded:
        assert fresh(result).status == AiResultStatus.RUNNING  # claimed, inference under way
        withdraw(thyroid_participant, coordinator, WithdrawalScope.STOP_AI_PROCESSING)
        return real_load_input(image)

    monkeypatch.setattr(jobs, "load_input", withdrawal_lands_meanwhile)

    assert jobs.process(result.pk) == []  # nothing was finished by this job

    kept = fresh(result)
    assert kept.status == AiResultStatus.CANCELLED and kept.attempts == 1
    assert not kept.mask and not kept.segmentation and not kept.overlay and kept.measurements == {}
    assert result_files() == set()
    assert events("ai_result.store") == [] and len(events("ai_result.cancel", kept)) == 1


def test_a_job_for_a_withdrawn_participant_cancels_rather_than_runs(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    """A result still queued although its participant no longer accepts AI
    processing (the flag set outside the withdrawal service, as a data
    repair would) is cancelled by the worker rather than run."""
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    Participant.objects.filter(pk=thyroid_participant.pk).update(ai_processing_stopped=True)

    assert jobs.process(result.pk) == []

    cancelled = fresh(result)
    assert (cancelled.status, cancelled.attempts) == (AiResultStatus.CANCELLED, 0)
    [event] = events("ai_result.cancel", cancelled)
    assert event.actor_username == "system:ai-engine" and result_files() == set()


# --- The sweeper ----------------------------------------------------------------------------


def test_a_job_the_broker_refused_at_upload_is_sent_by_the_sweeper(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    with publishing_to(CLOSED_BROKER):
        image = upload(thyroid_participant, thyroid_dicom(0))
        [result] = AiResult.objects.filter(image=image)
        assert (result.status, result.dispatched_at) == (AiResultStatus.QUEUED, None)
        assert jobs.dispatch_pending() == jobs.Sweep(queued_images=0, dispatched=0, waiting=1)
        assert fresh(result).dispatched_at is None
    assert jobs_sent() == []  # nothing reached the (memory) broker meanwhile

    sweep = jobs.dispatch_pending()

    assert sweep == jobs.Sweep(queued_images=0, dispatched=1, waiting=0)
    sent = fresh(result)
    assert sent.status == AiResultStatus.QUEUED and sent.dispatched_at is not None
    assert jobs_sent() == [result.pk]
    assert jobs.dispatch_pending() == jobs.Sweep(queued_images=0, dispatched=0, waiting=0)
    assert jobs_sent() == []


def test_an_image_accepted_before_the_model_was_deployed_is_queued_by_the_sweeper(
    recruiting: Trial, users: dict[str, Any], thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0))
    assert not AiResult.objects.exists()
    model_version = deploy(
        recruiting,
        users["trial_admin"],
        services.SHIPPED_CHECKPOINTS["thyroid"],
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )

    swept = tasks.dispatch_pending.apply().get()

    assert swept == {"queued_images": 1, "dispatched": 1, "waiting": 0}
    result = result_of(image)
    assert result.model_version_id == model_version.pk and result.dispatched_at is not None
    assert jobs_sent() == [result.pk]
    assert tasks.dispatch_pending.apply().get() == {"queued_images": 0, "dispatched": 0, "waiting": 0}


def test_an_upload_survives_a_failure_to_queue_and_the_sweeper_repairs_it(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_queue = services.ai_result_queue
    monkeypatch.setattr(services, "ai_result_queue", database_down)

    image = upload(thyroid_participant, thyroid_dicom(0))

    assert not AiResult.objects.exists() and jobs_sent() == []
    monkeypatch.setattr(services, "ai_result_queue", real_queue)
    assert jobs.dispatch_pending() == jobs.Sweep(queued_images=1, dispatched=1, waiting=0)
    assert jobs_sent() == [result_of(image).pk]


def test_the_sweeper_resends_jobs_dispatched_long_ago_only(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    old, recent = (result_of(upload(thyroid_participant, thyroid_dicom(seed))) for seed in range(2))
    assert sorted(jobs_sent()) == sorted([old.pk, recent.pk])
    long_ago = timezone.now() - dt.timedelta(seconds=settings.AI_INFERENCE_REDISPATCH_SECONDS + 60)
    AiResult.objects.filter(pk=old.pk).update(dispatched_at=long_ago)
    recent_at = fresh(recent).dispatched_at

    assert jobs.dispatch_pending() == jobs.Sweep(queued_images=0, dispatched=1, waiting=0)

    assert jobs_sent() == [old.pk]
    resent = fresh(old).dispatched_at
    assert resent is not None and resent > long_ago + dt.timedelta(seconds=60)
    assert fresh(recent).dispatched_at == recent_at
    # Counted from the re-send: the next sweep leaves both alone.
    assert jobs.dispatch_pending().dispatched == 0 and jobs_sent() == []


def test_the_sweeper_resends_running_work_whose_lease_ended(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    abandoned, busy = (result_of(upload(thyroid_participant, thyroid_dicom(seed))) for seed in range(2))
    drain()
    claimed_by(abandoned, "otherhost:123", lease_ended=True)
    claimed_by(busy, "otherhost:456")

    assert jobs.dispatch_pending() == jobs.Sweep(queued_images=0, dispatched=1, waiting=0)

    assert jobs_sent() == [abandoned.pk]
    assert fresh(abandoned).dispatched_at is not None
    # The re-sent job takes the abandoned work over; the busy one is not touched.
    [done] = jobs.process(abandoned.pk, batch_limit=8)
    assert done.pk == abandoned.pk and done.status == AiResultStatus.DONE
    assert fresh(busy).status == AiResultStatus.RUNNING and fresh(busy).claimed_by == "otherhost:456"


def test_the_sweeper_never_queues_images_of_withdrawn_participants(
    recruiting: Trial,
    users: dict[str, Any],
    participant_for: Callable[..., Participant],
    upload: Callable[..., Image],
    coordinator: Any,
) -> None:
    stopped, withdrawn, staying = participant_for(), participant_for(), participant_for()
    images = {
        "stopped": upload(stopped, thyroid_dicom(0)),
        "withdrawn": upload(withdrawn, thyroid_dicom(1)),
        "staying": upload(staying, thyroid_dicom(2)),
    }
    withdraw(stopped, coordinator, WithdrawalScope.STOP_AI_PROCESSING)
    withdraw(withdrawn, coordinator, WithdrawalScope.WITHDRAW_DATA)
    deploy(
        recruiting,
        users["trial_admin"],
        services.SHIPPED_CHECKPOINTS["thyroid"],
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )

    assert jobs.dispatch_pending() == jobs.Sweep(queued_images=1, dispatched=1, waiting=0)

    assert list(AiResult.objects.values_list("image_id", flat=True)) == [images["staying"].pk]
    assert jobs.images_without_result() == []
    assert jobs.queue_image(images["stopped"].pk) is None and jobs.queue_image(images["withdrawn"].pk) is None
    assert AiResult.objects.count() == 1


# --- Device -------------------------------------------------------------------------------


def test_cuda_without_a_gpu_runs_on_the_cpu_and_says_so(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.AI_DEVICE = "cuda"
    # This machine has no GPU; on one that has, the same path is taken.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    jobs._engines.clear()
    result = result_of(upload(thyroid_participant, thyroid_dicom(0)))

    [done] = jobs.process(result.pk)

    done = fresh(done)
    assert done.status == AiResultStatus.DONE
    assert done.device.startswith("cpu (fallback"), done.device
    assert "no CUDA GPU" in done.device
    [store] = events("ai_result.store", done)
    assert store.after is not None and store.after["device"] == done.device


# --- A change of model after recruitment opened ---------------------------------------


def test_a_model_change_keeps_queued_work_on_the_old_version(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    upload: Callable[..., Image],
    users: dict[str, Any],
    recruiting: Trial,
    retrained: Path,
) -> None:
    before_change = result_of(upload(thyroid_participant, thyroid_dicom(0)))
    new_version = services.model_register(
        actor=services.AI_ENGINE, path=retrained, name="combined-thyroid-synthetic", version="1.1", indication="thyroid"
    )
    assert new_version.sha256 != thyroid_model.sha256
    admin = actor_for(users["trial_admin"])
    with pytest.raises(RuleViolation, match="reason"):
        services.model_activate(actor=admin, trial=recruiting, model_version=new_version)
    services.model_activate(actor=admin, trial=recruiting, model_version=new_version, reason="Retrained model")

    after_change = result_of(upload(thyroid_participant, thyroid_dicom(1)))

    assert before_change.model_version_id == thyroid_model.pk
    assert after_change.model_version_id == new_version.pk
    # One job judges only work of its own version: the two are not batched together.
    [old] = jobs.process(before_change.pk, batch_limit=8)
    assert old.pk == before_change.pk and old.status == AiResultStatus.DONE
    assert fresh(after_change).status == AiResultStatus.QUEUED
    [new] = jobs.process(after_change.pk, batch_limit=8)
    assert new.status == AiResultStatus.DONE
    for result, version in ((old, thyroid_model), (new, new_version)):
        [store] = events("ai_result.store", result)
        assert store.after is not None and store.after["model_sha256"] == version.sha256
        assert fresh(result).model_version.sha256 == version.sha256
    # The sweeper does not ask the new version about images the old one judged.
    assert jobs.dispatch_pending().queued_images == 0 and AiResult.objects.count() == 2


# --- Bad input to the services ---------------------------------------------------------


def test_the_services_refuse_bad_requests_and_write_nothing(
    recruiting: Trial,
    participant_for: Callable[..., Participant],
    upload: Callable[..., Image],
    send: Callable[..., imaging_services.UploadOutcome],
    coordinator: Any,
) -> None:
    # Registered, not deployed: uploads queue nothing by themselves.
    model_version = services.model_register(
        actor=services.AI_ENGINE,
        path=services.SHIPPED_CHECKPOINTS["thyroid"],
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )
    participant, other = participant_for(), participant_for()
    withdrawn_image = upload(participant, thyroid_dicom(0))
    withdraw(participant, coordinator, WithdrawalScope.STOP_AI_PROCESSING)
    withdrawn_image.refresh_from_db()
    rejected = send(other, ct_dicom(), "ct.dcm").image
    assert rejected is not None
    audited = AuditEvent.objects.count()

    with pytest.raises(RuleViolation, match="has withdrawn from AI processing") as refused:
        services.ai_result_queue(image=withdrawn_image, model_version=model_version)
    assert participant.study_id in str(refused.value)
    with pytest.raises(RuleViolation, match="was rejected"):
        services.ai_result_queue(image=rejected, model_version=model_version)
    assert not AiResult.objects.exists() and AuditEvent.objects.count() == audited

    queued = services.ai_result_queue(image=upload(other, thyroid_dicom(1)), model_version=model_version)
    running = services.ai_result_start(result=queued, claimed_by="w:1")
    audited = AuditEvent.objects.count()
    for blank in ("", "   "):
        with pytest.raises(RuleViolation, match="reason"):
            services.ai_result_release(result=running, reason=blank)
    assert fresh(running).status == AiResultStatus.RUNNING and fresh(running).claimed_by == "w:1"
    assert AuditEvent.objects.count() == audited


def test_a_dicom_with_pixel_spacing_gets_a_segmentation_that_reads_back(
    thyroid_model: ModelVersion, thyroid_participant: Participant, upload: Callable[..., Image]
) -> None:
    image = upload(thyroid_participant, thyroid_dicom(0, pixel_spacing=True))
    assert image.pixel_spacing_mm == pytest.approx(SPACING_MM)

    [finished] = jobs.process(result_of(image).pk)

    result = fresh(finished)
    assert result.status == AiResultStatus.DONE and result.segmentation, result.export_note
    segmentation = highdicom.seg.segread(
        io.BytesIO(storage.read_verified(result.segmentation.name, result.segmentation_sha256))
    )
    mask = selectors.ai_result_mask(result)
    assert np.array_equal(segmentation.pixel_array.astype(bool).reshape(mask.shape), mask > 0)
