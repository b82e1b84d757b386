"""The AI pipeline with real processes: a real Celery worker
(`celery -A config worker -Q inference`) on a real Redis broker, sharing the
test database, judges the real ultrasound files pydicom ships, end to end;
survives a worker killed mid-task; and receives jobs published while the
broker was down once it is back."""

from __future__ import annotations

import functools
import io
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import pydicom
import pytest
from django.db import connection, transaction
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from ai_engine import jobs, services
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from config.workers import pool_process_ids
from imaging import services as imaging_services
from imaging import storage
from imaging.models import Image
from tests.celery_worker import RedisServer, Worker, publishing_to, wait_until
from tests.conftest import actor_for
from tests.imaging_files import randomized
from trial.audit import verify_chain
from trial.models import AuditChainHead, AuditEvent, Participant, Trial

pytestmark = pytest.mark.django_db(transaction=True)

REAL_ULTRASOUND = ["examples_rgb_color.dcm", "examples_ybr_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm"]
FINISHED = (AiResultStatus.DONE, AiResultStatus.ABSTAINED)


@pytest.fixture
def thyroid_model(recruiting: Trial, users: dict[str, Any]) -> ModelVersion:
    """The shipped thyroid checkpoint, registered and deployed (recruitment
    is open, so the change of model needs the admin path and a reason)."""
    model_version = services.model_register(
        actor=services.AI_ENGINE,
        path=services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )
    services.model_activate(
        actor=actor_for(users["trial_admin"]),
        trial=recruiting,
        model_version=model_version,
        reason="Deployed for the test",
    )
    return model_version


@pytest.fixture
def thyroid_participant(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="thyroid"), coordinator)


def upload(participant: Participant, coordinator: Any, name: str, data: bytes | None = None) -> Image:
    data = data if data is not None else Path(get_testdata_file(name)).read_bytes()
    outcome = imaging_services.image_upload(actor=actor_for(coordinator), participant=participant, name=name, data=data)
    assert outcome.status == "accepted", outcome.reason
    assert outcome.image is not None
    return outcome.image


def finished_results(count: int) -> list[AiResult]:
    """The finished results once there are `count`, done ones with their
    exports attached (the step right after storing); [] before."""
    results = list(AiResult.objects.filter(status__in=FINISHED).select_related("image", "model_version"))
    if any(services.exports_pending(result) for result in results):
        return []
    return results if len(results) >= count else []


def test_a_real_worker_judges_the_real_ultrasound_files_end_to_end(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    coordinator: Any,
    redis_broker: str,
    start_celery_worker: Callable[..., Worker],
) -> None:
    worker = start_celery_worker(redis_broker)
    images = [upload(thyroid_participant, coordinator, name) for name in REAL_ULTRASOUND]
    results = wait_until(
        lambda: finished_results(len(images)), timeout=120, what="four finished AI results", worker=worker
    )
    assert {result.image_id for result in results} == {image.pk for image in images}
    done = [result for result in results if result.status == AiResultStatus.DONE]
    assert done, [(result.image.original_name, result.reason) for result in results]
    for result in results:
        assert result.model_version.sha256 == thyroid_model.sha256
        assert result.attempts == 1 and result.device.startswith("cpu")
        assert result.claimed_by.startswith(f"{os.uname().nodename}:")
        assert result.runtime_ms is not None and result.runtime_ms > 0
    for result in done:
        image = result.image
        mask = np.asarray(PILImage.open(io.BytesIO(storage.read_verified(result.mask.name, result.mask_sha256))))
        assert mask.shape == (image.rows, image.columns)
        assert {"lesion_count", "total_area_px"} <= set(result.measurements)
        assert result.category and result.category_probability is not None
        # The DICOM Segmentation opens and lies on the de-identified source.
        source = pydicom.dcmread(io.BytesIO(storage.read_verified(image.file.name, image.sha256)))
        segmentation = highdicom.seg.segread(
            io.BytesIO(storage.read_verified(result.segmentation.name, result.segmentation_sha256))
        )
        assert (segmentation.Rows, segmentation.Columns) == (source.Rows, source.Columns)
        referenced = segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert segmentation.StudyInstanceUID == source.StudyInstanceUID
        assert np.array_equal(segmentation.pixel_array.astype(bool).reshape(mask.shape), mask > 0)
        overlay = PILImage.open(io.BytesIO(storage.read_verified(result.overlay.name, result.overlay_sha256)))
        assert overlay.size == (image.columns, image.rows)
    for action in ("ai_result.queue", "ai_result.start", "ai_result.store"):
        assert AuditEvent.objects.filter(action=action).count() == len(images)
    assert AuditEvent.objects.filter(action="ai_result.export").count() == len(done)
    assert verify_chain().ok


def _waits_on_our_lock() -> bool:
    """Whether another PostgreSQL session (the worker's) is blocked by this
    test's transaction. PostgreSQL takes a snapshot of pg_stat_activity at
    its first reading in a transaction and shows it until the transaction
    ends: this test polls inside the transaction that holds the lock, so the
    snapshot is dropped before each reading, or the first one (taken before
    the worker got there) would be seen for ever."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        )
        return bool(cursor.fetchone()[0])


def _sleeps_on_the_sqlite_lock(pid: int) -> bool:
    """Whether the pool process has the test database open and sleeps in the
    kernel: SQLite's busy handler waiting for the write lock this test holds
    (nothing else in the task sleeps). Linux /proc."""
    database = Path(connection.settings_dict["NAME"]).resolve()
    try:
        open_files = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:  # the process or one of its descriptors is gone
        return False
    return str(database) in open_files and "nanosleep" in wchan


def test_a_worker_killed_during_a_task_leaves_exactly_one_result(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    coordinator: Any,
    redis_broker: str,
    start_celery_worker: Callable[..., Worker],
) -> None:
    # The job waits on the broker until a worker starts.
    image = upload(thyroid_participant, coordinator, "examples_rgb_color.dcm")
    [queued] = AiResult.objects.filter(image=image)
    assert queued.status == AiResultStatus.QUEUED and queued.dispatched_at is not None
    with transaction.atomic():
        # Hold the audit chain's head (SQLite: the database's write lock): the
        # worker takes the job and then waits for it inside its task.
        AuditChainHead.objects.select_for_update().get()
        worker = start_celery_worker(redis_broker)
        [first_pool_process] = pool_process_ids(worker.process)
        worker.wait_for_log("ai_engine.run_inference")
        waiting: Callable[[], bool] = (
            _waits_on_our_lock
            if connection.vendor == "postgresql"
            else functools.partial(_sleeps_on_the_sqlite_lock, first_pool_process)
        )
        wait_until(waiting, timeout=60, what="the pool process to wait on the lock this test holds", worker=worker)
        assert pool_process_ids(worker.process) == [first_pool_process]
        os.kill(first_pool_process, signal.SIGKILL)
        wait_until(lambda: "SIGKILL" in worker.log(), timeout=30, what="the worker to see its loss", worker=worker)
    # Our transaction has ended: the job, put back on the queue by the
    # worker (acks_late, reject on worker lost), runs in a new pool process.
    finished = wait_until(lambda: finished_results(1), timeout=90, what="the result after redelivery", worker=worker)
    assert AiResult.objects.count() == 1
    [result] = finished
    assert result.pk == queued.pk and result.status == AiResultStatus.DONE
    assert not result.claimed_by.endswith(f":{first_pool_process}")
    assert AuditEvent.objects.filter(action="ai_result.store").count() == 1
    assert verify_chain().ok


def test_a_job_published_while_the_broker_is_down_is_delivered_when_it_is_back(
    thyroid_model: ModelVersion,
    thyroid_participant: Participant,
    coordinator: Any,
    own_redis: RedisServer,
    start_celery_worker: Callable[..., Worker],
) -> None:
    with publishing_to(own_redis.url):  # not started: the broker is down
        started = time.monotonic()
        image = upload(thyroid_participant, coordinator, "examples_palette.dcm")
        upload_seconds = time.monotonic() - started
        [result] = AiResult.objects.filter(image=image)
        assert result.status == AiResultStatus.QUEUED and result.dispatched_at is None
        assert upload_seconds < 30  # the upload did not wait for the broker indefinitely

        own_redis.start()
        worker = start_celery_worker(own_redis.url)
        # The sweeper, as Celery beat runs it, sends what waited in the outbox.
        assert jobs.dispatch_pending().dispatched == 1
        [finished] = wait_until(lambda: finished_results(1), timeout=90, what="the delayed job", worker=worker)
    assert finished.pk == result.pk and finished.status in FINISHED
    assert finished.dispatched_at is not None
