"""AI results stored with the exact model that made them: one row per image
and model version however often the work is delivered, mask and
probability map kept in verified storage, every write audited."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.db import IntegrityError, transaction

from ai_engine import selectors, services
from ai_engine.inference import InferenceResult
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from imaging import services as imaging_services
from imaging.models import Image
from imaging.storage import StoredFileCorrupt
from tests.conftest import actor_for
from tests.imaging_files import randomized, ultrasound_dicom
from trial.errors import Conflict, RuleViolation
from trial.models import AuditEvent, Participant

SIZE = 128


@pytest.fixture
def image(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Image:
    participant = randomized(enroll(indication="thyroid"), coordinator)
    outcome = imaging_services.image_upload(
        actor=actor_for(coordinator), participant=participant, name="scan.dcm", data=ultrasound_dicom()
    )
    assert outcome.image is not None
    return outcome.image


@pytest.fixture
def model_version(db: Any) -> ModelVersion:
    return services.model_register(
        actor=services.AI_ENGINE,
        path=services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )


@pytest.fixture
def running(image: Image, model_version: ModelVersion) -> AiResult:
    return services.ai_result_start(result=services.ai_result_queue(image=image, model_version=model_version))


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def after(event: AuditEvent) -> dict[str, Any]:
    assert event.after is not None
    return event.after


def row(result: AiResult) -> dict[str, Any]:
    values = AiResult.objects.filter(pk=result.pk).values().get()
    return {key: str(value) for key, value in values.items()}


def result_files() -> set[Path]:
    folder = Path(settings.MEDIA_ROOT) / services.RESULT_FOLDER
    return set(folder.rglob("*")) if folder.exists() else set()


def test_queueing_twice_gives_one_row_and_one_event(image: Image, model_version: ModelVersion) -> None:
    first = services.ai_result_queue(image=image, model_version=model_version)
    second = services.ai_result_queue(image=image, model_version=model_version)
    assert first.pk == second.pk and AiResult.objects.count() == 1
    assert (first.status, first.attempts) == (AiResultStatus.QUEUED, 0)
    [event] = events("ai_result.queue")
    assert event.actor_username == "system:ai-engine"
    assert after(event)["model_sha256"] == model_version.sha256 and after(event)["status"] == "queued"
    assert list(selectors.ai_results_for_image(image=image)) == [first]


def test_a_stored_outcome_reads_back_exactly_with_its_figures(running: AiResult, found: InferenceResult) -> None:
    assert (running.status, running.attempts) == (AiResultStatus.RUNNING, 1) and running.started_at is not None
    stored = services.ai_result_store(result=running, outcome=found)
    stored = AiResult.objects.get(pk=stored.pk)
    assert stored.status == AiResultStatus.DONE and stored.reason == "" and stored.finished_at is not None
    assert found.mask is not None and found.probability is not None
    mask = selectors.ai_result_mask(stored)
    assert mask.dtype == np.uint8 and np.array_equal(mask, found.mask)
    probability = selectors.ai_result_probability(stored)
    assert probability.dtype == np.float16 and np.array_equal(probability, found.probability)
    assert stored.measurements["lesion_count"] == found.measurements["lesion_count"] >= 1
    assert stored.category == found.category and stored.category_probability == found.category_probability
    assert stored.category_probabilities == pytest.approx(found.category_probabilities)
    assert stored.quality["ok"] is True and stored.frame_index == found.frame_index
    assert stored.device == found.device and stored.model_version.sha256 == found.model_sha256
    [start] = events("ai_result.start")
    [event] = events("ai_result.store")
    assert start.before == {"status": "queued"} and event.before == {"status": "running"}
    assert after(event)["status"] == "done" and after(event)["model_sha256"] == found.model_sha256
    assert after(event)["measurements"]["lesion_count"] == found.measurements["lesion_count"]
    assert "probability" not in after(event) and "mask" not in after(event)  # digests only, no pixel data


def test_a_redelivered_outcome_or_start_changes_nothing(running: AiResult, found: InferenceResult) -> None:
    stored = services.ai_result_store(result=running, outcome=found)
    before, files, audited = row(stored), result_files(), AuditEvent.objects.count()
    again = services.ai_result_store(result=running, outcome=dataclasses.replace(found, category="benign"))
    restarted = services.ai_result_start(result=running)
    assert again.pk == restarted.pk == stored.pk
    assert row(stored) == before and result_files() == files and AuditEvent.objects.count() == audited


def test_an_abstention_keeps_its_reason_and_no_mask(running: AiResult, abstained: InferenceResult) -> None:
    stored = AiResult.objects.get(pk=services.ai_result_store(result=running, outcome=abstained).pk)
    assert stored.status == AiResultStatus.ABSTAINED and stored.reason == abstained.reason
    assert stored.reason.startswith("blank")
    assert not stored.mask and not stored.probability and stored.quality["ok"] is False
    with pytest.raises(selectors.AiResultFileMissing):
        selectors.ai_result_mask(stored)
    [event] = events("ai_result.store")
    assert after(event)["status"] == "abstained" and event.reason == abstained.reason


def test_an_outcome_from_another_checkpoint_is_refused(running: AiResult, found: InferenceResult) -> None:
    before, files = row(running), result_files()
    with pytest.raises(Conflict, match="must keep the version that made it"):
        services.ai_result_store(result=running, outcome=dataclasses.replace(found, model_sha256="0" * 64))
    assert row(running) == before and result_files() == files and events("ai_result.store") == []


def test_an_outcome_needs_a_started_result(image: Image, model_version: ModelVersion, found: InferenceResult) -> None:
    queued = services.ai_result_queue(image=image, model_version=model_version)
    with pytest.raises(Conflict, match="start it"):
        services.ai_result_store(result=queued, outcome=found)
    assert AiResult.objects.get().status == AiResultStatus.QUEUED


def test_a_failure_needs_a_reason_and_can_be_retried(running: AiResult, found: InferenceResult) -> None:
    with pytest.raises(RuleViolation, match="reason"):
        services.ai_result_fail(result=running, reason="  ")
    failed = services.ai_result_fail(result=running, reason="Worker lost")
    assert (failed.status, failed.reason) == (AiResultStatus.FAILED, "Worker lost")
    [event] = events("ai_result.fail")
    assert event.reason == "Worker lost" and after(event)["status"] == "failed"
    retried = services.ai_result_start(result=failed)
    assert (retried.status, retried.attempts, retried.reason) == (AiResultStatus.RUNNING, 2, "")
    done = services.ai_result_store(result=retried, outcome=found)
    with pytest.raises(Conflict):
        services.ai_result_fail(result=done, reason="Too late")


def test_the_database_holds_one_result_per_image_and_version(image: Image, model_version: ModelVersion) -> None:
    services.ai_result_queue(image=image, model_version=model_version)
    with pytest.raises(IntegrityError), transaction.atomic():
        AiResult.objects.create(image=image, model_version=model_version)
    assert AiResult.objects.count() == 1


def test_a_stored_file_that_no_longer_matches_its_digest_is_refused(running: AiResult, found: InferenceResult) -> None:
    stored = services.ai_result_store(result=running, outcome=found)
    # The stored files are shared by content, so the row's digest is altered rather than the file.
    stored.mask_sha256 = stored.probability_sha256 = "0" * 64
    with pytest.raises(StoredFileCorrupt):
        selectors.ai_result_mask(stored)
    with pytest.raises(StoredFileCorrupt):
        selectors.ai_result_probability(stored)
