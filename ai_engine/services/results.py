"""The AI results' writes: queued, claimed (micro-batches), stored, exports
attached, failed, given back, cancelled by a withdrawal, downloaded; each
tied to the model version that made it, each checked and audited in the
same transaction. ai_engine.jobs drives them from the Celery tasks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import socket
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from PIL import Image as PILImage

from ai_engine.inference.records import STATUS_ABSTAINED, STATUS_DONE, InferenceResult
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from imaging import storage
from imaging.models import Image
from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, RuleViolation
from trial.models import Participant
from trial.permissions import Capability
from trial.services.checks import authorize, require_reason

AI_ENGINE = Actor.system("ai-engine")
RESULT_FOLDER = "ai-results"
_FINISHED = (AiResultStatus.DONE, AiResultStatus.ABSTAINED)
# No more work will be done on these: finished, or cancelled by a withdrawal.
_SETTLED = (*_FINISHED, AiResultStatus.CANCELLED)
_PENDING = (AiResultStatus.QUEUED, AiResultStatus.RUNNING, AiResultStatus.FAILED)
_OUTCOME_STATUSES = {STATUS_DONE: AiResultStatus.DONE, STATUS_ABSTAINED: AiResultStatus.ABSTAINED}


def _result_event(
    *, actor: Actor, action: str, result: AiResult, before: str | None, reason: str = "", role: str = ""
) -> None:
    """One audit event per write of a result: its state and the checkpoint
    that made it, the measurements in summary, never pixel data."""
    image = result.image
    after: dict[str, Any] = {
        "status": result.status,
        "image": image.pk,
        "model_version": result.model_version_id,
        "model_sha256": result.model_version.sha256,
        "attempts": result.attempts,
    }
    if result.status in _FINISHED:
        after["measurements"] = {
            key: result.measurements.get(key) for key in ("lesion_count", "total_area_px", "total_area_mm2")
        }
        after["category"] = result.category
        after["mask_sha256"] = result.mask_sha256
        after["probability_sha256"] = result.probability_sha256
        after["device"] = result.device
        if action == "ai_result.export":
            after["segmentation_sha256"] = result.segmentation_sha256
            after["overlay_sha256"] = result.overlay_sha256
    if result.claimed_by:
        after["worker"] = result.claimed_by
    audit.record(
        actor=actor,
        role=role or ("system" if actor.is_system else ""),
        action=action,
        obj=result,
        trial=image.trial,
        site=image.site,
        before={"status": before} if before is not None else None,
        after=after,
        reason=reason,
    )


@dataclass(frozen=True)
class Exports:
    """Files made from a finished outcome for other software: a DICOM
    Segmentation (DICOM input) and a PNG overlay; `note` says why one is missing."""

    segmentation: bytes | None = None
    overlay: bytes | None = None
    note: str = ""


def _locked(result: AiResult) -> AiResult:
    """The current row, locked until the transaction ends, so that two
    deliveries of the same work take turns."""
    if not (AiResult.image.is_cached(result) and AiResult.model_version.is_cached(result)):
        return _for_work(AiResult.objects.select_for_update(of=("self",))).get(pk=result.pk)
    # A result's image and model never change: keep those the caller loaded
    # and read only the row itself (a much cheaper statement on the hot path).
    fresh = AiResult.objects.select_for_update().get(pk=result.pk)
    fresh.image, fresh.model_version = result.image, result.model_version
    return fresh


# What a worker needs of a result's relations: the image with its trial and
# site (audit events), the model's identity (not its card or settings).
_WORK_RELATIONS = ("image__participant", "image__trial", "image__site", "model_version")
_HEAVY_FIELDS = (
    "model_version__architecture",
    "model_version__training",
    "model_version__metrics",
    "model_version__preprocessing",
    "model_version__categories",
    "model_version__intended_use",
    "model_version__model_card",
    "model_version__retirement_reason",
    "image__trial__indications",
    "image__trial__stratification_covariates",
    "image__participant__covariates",
)


def _for_work(results: QuerySet[AiResult]) -> QuerySet[AiResult]:
    return results.select_related(*_WORK_RELATIONS).defer(*_HEAVY_FIELDS)


@transaction.atomic
def ai_result_queue(*, image: Image, model_version: ModelVersion, actor: Actor | None = None) -> AiResult:
    """The result of this version for this image, created queued when there
    is none yet; the existing row otherwise (a redelivered request)."""
    actor = actor or AI_ENGINE
    existing = AiResult.objects.filter(image=image, model_version=model_version).first()
    if existing is not None:
        return existing
    if not image.is_usable:
        raise RuleViolation(f"Image {image.pk} was rejected: the AI cannot read it.", field="image")
    if not image.participant.accepts_ai_processing:
        raise RuleViolation(
            f"{image.participant.study_id} has withdrawn from AI processing: their images are not given to the AI.",
            field="image",
        )
    try:
        # The unique constraint settles a race between two deliveries; the
        # savepoint keeps the caller's transaction usable when we lose it.
        with transaction.atomic():
            result = AiResult.objects.create(image=image, model_version=model_version)
    except IntegrityError:
        return AiResult.objects.get(image=image, model_version=model_version)
    _result_event(actor=actor, action="ai_result.queue", result=result, before=None)
    return result


@transaction.atomic
def ai_result_start(
    *,
    result: AiResult,
    actor: Actor | None = None,
    claimed_by: str = "",
    lease_seconds: float | None = None,
    batch_size: int | None = None,
) -> AiResult:
    """Mark a queued (or failed, retried, or abandoned) result running for the
    worker process `claimed_by` until the lease ends, and count the attempt.
    A finished or cancelled result is returned unchanged: the work was
    delivered again, or is no longer wanted."""
    result = _locked(result)
    if result.status in _SETTLED:
        return result
    return _start(result, actor or AI_ENGINE, claimed_by, lease_seconds, batch_size)


def _start(
    result: AiResult, actor: Actor, claimed_by: str, lease_seconds: float | None, batch_size: int | None
) -> AiResult:
    """Mark a result locked by the caller running (see ai_result_start)."""
    before = result.status
    now = timezone.now()
    result.status = AiResultStatus.RUNNING
    result.attempts += 1
    result.started_at = now
    result.reason = ""
    result.claimed_by = claimed_by[:200]
    result.lease_expires_at = now + dt.timedelta(seconds=lease_seconds) if lease_seconds is not None else None
    result.batch_size = batch_size
    result.save(
        update_fields=["status", "attempts", "started_at", "reason", "claimed_by", "lease_expires_at", "batch_size"]
    )
    _result_event(actor=actor, action="ai_result.start", result=result, before=before)
    return result


def claimer_alive(result: AiResult, now: dt.datetime | None = None) -> bool:
    """Whether the worker process that claimed a running result may still be
    at work: its lease has not ended and, when it ran on this host, its
    process still exists."""
    now = now or timezone.now()
    if result.lease_expires_at is None or result.lease_expires_at <= now:
        return False
    host, _, pid = result.claimed_by.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
    return True


@transaction.atomic
def ai_results_claim(
    *, result_id: int, worker: str, lease_seconds: float, batch_limit: int = 1, actor: Actor | None = None
) -> list[AiResult]:
    """A worker's claim on a job's result and, micro-batching, on up to
    batch_limit − 1 other queued results of the same model (rows another
    worker is claiming are skipped): all marked running for `worker` under a
    lease. [] when there is nothing to do: the result is gone, finished,
    cancelled, failed for good, or running in a live worker. A result whose
    participant withdrew from AI processing is cancelled instead."""
    actor = actor or AI_ENGINE
    own = _for_work(AiResult.objects.select_for_update(of=("self",))).filter(pk=result_id).first()
    if own is None:
        return []
    if own.status == AiResultStatus.RUNNING and own.claimed_by != worker and claimer_alive(own):
        return []
    if own.status not in (AiResultStatus.QUEUED, AiResultStatus.RUNNING):
        return []
    if not own.image.participant.accepts_ai_processing:
        ai_results_cancel(
            participant=own.image.participant,
            actor=actor,
            role="system",
            reason="The participant withdrew from AI processing.",
        )
        return []
    mates: list[AiResult] = []
    if batch_limit > 1:
        mates = list(
            _for_work(AiResult.objects.select_for_update(of=("self",), skip_locked=True))
            .filter(model_version_id=own.model_version_id, status=AiResultStatus.QUEUED)
            .filter(image__participant__ai_processing_stopped=False, image__participant__data_withdrawn=False)
            .exclude(pk=own.pk)
            .order_by("created_at", "id")[: batch_limit - 1]
        )
    batch = [own, *mates]
    return [_start(result, actor, worker, lease_seconds, len(batch)) for result in batch]


@transaction.atomic
def ai_result_release(*, result: AiResult, reason: str, actor: Actor | None = None) -> AiResult:
    """Give a running result back to the queue (a transient error stopped its
    batch): another delivery may take it. Anything else is returned unchanged."""
    actor = actor or AI_ENGINE
    reason = require_reason(reason, "give an AI result back to the queue")
    result = _locked(result)
    if result.status != AiResultStatus.RUNNING:
        return result
    result.status = AiResultStatus.QUEUED
    result.reason = reason
    result.claimed_by = ""
    result.lease_expires_at = None
    result.save(update_fields=["status", "reason", "claimed_by", "lease_expires_at"])
    _result_event(actor=actor, action="ai_result.release", result=result, before=AiResultStatus.RUNNING, reason=reason)
    return result


@transaction.atomic
def ai_results_cancel(*, participant: Participant, actor: Actor, role: str, reason: str) -> list[AiResult]:
    """Cancel every pending result (queued, running, failed) of the
    participant's images: they withdrew from AI processing. A worker that is
    running one finds it cancelled when it comes to store and keeps nothing.
    Finished results stay as they are (what was said before the withdrawal)."""
    reason = require_reason(reason, "cancel pending AI work")
    pending = list(
        AiResult.objects.select_for_update()
        .select_related("image", "model_version")
        .filter(image__participant=participant, status__in=_PENDING)
        .order_by("id")
    )
    for result in pending:
        before = result.status
        result.status = AiResultStatus.CANCELLED
        result.reason = reason
        result.claimed_by = ""
        result.lease_expires_at = None
        result.finished_at = timezone.now()
        result.save(update_fields=["status", "reason", "claimed_by", "lease_expires_at", "finished_at"])
        _result_event(actor=actor, action="ai_result.cancel", result=result, before=before, reason=reason, role=role)
    return pending


def ai_results_mark_dispatched(result_ids: list[int]) -> int:
    """Note that these results' jobs were handed to the broker. Delivery
    bookkeeping only, like the broker's own state: it changes nothing a
    reader or an analysis sees, so it records no audit event (the queue,
    start, store, fail, release and cancel events record the result's life)."""
    return AiResult.objects.filter(pk__in=result_ids, dispatched_at__isnull=True).update(dispatched_at=timezone.now())


@transaction.atomic
def ai_result_store(*, result: AiResult, outcome: InferenceResult, actor: Actor | None = None) -> AiResult:
    """Keep what the engine said: mask and probability map in storage, the
    figures in the row, status done or abstained. Refused when the outcome
    came from another checkpoint than the result's version. A finished or
    cancelled result is returned unchanged (a redelivered outcome, or a
    withdrawal that came first). The exports follow (ai_result_attach_exports)."""
    actor = actor or AI_ENGINE
    result = _locked(result)
    if outcome.model_sha256 != result.model_version.sha256:
        raise Conflict(
            f"This outcome was produced by the checkpoint with sha256 {outcome.model_sha256}, not by "
            f"{result.model_version.name} {result.model_version.version} (sha256 {result.model_version.sha256}): "
            "a result must keep the version that made it."
        )
    if result.status in _SETTLED:
        return result
    if result.status != AiResultStatus.RUNNING:
        raise Conflict(f"The AI result {result.pk} is {result.status}; start it before storing its outcome.")
    status = _OUTCOME_STATUSES.get(outcome.status)
    if status is None:
        raise RuleViolation(f"Unknown outcome status {outcome.status!r}; expected done or abstained.")
    if status == AiResultStatus.DONE and (outcome.mask is None or outcome.probability is None):
        raise RuleViolation("A finished outcome must carry its mask and its probability map.")
    before = result.status
    written: list[str] = []
    try:
        if outcome.mask is not None:
            result.mask, result.mask_sha256 = _keep(_mask_png(outcome.mask), "png", written)
        if outcome.probability is not None:
            result.probability, result.probability_sha256 = _keep(_probability_npz(outcome.probability), "npz", written)
        result.status = status
        result.reason = outcome.reason if status == AiResultStatus.ABSTAINED else ""
        result.quality = _json_safe(
            {"ok": outcome.quality.ok, "reason": outcome.quality.reason, "figures": outcome.quality.figures}
        )
        result.measurements = _json_safe(outcome.measurements)
        result.category = outcome.category or ""
        result.category_probability = _json_safe(outcome.category_probability)
        result.category_probabilities = _json_safe(outcome.category_probabilities)
        result.frame_index = outcome.frame_index
        result.device = outcome.device[:200]
        result.runtime_ms = _json_safe(float(outcome.runtime_ms))
        result.finished_at = timezone.now()
        result.lease_expires_at = None
        result.save()
        _result_event(actor=actor, action="ai_result.store", result=result, before=before, reason=result.reason)
    except BaseException:
        storage.delete_quietly(written)
        raise
    return result


def exports_pending(result: AiResult) -> bool:
    """A done result whose exports have not been attached yet."""
    return (
        result.status == AiResultStatus.DONE
        and not result.segmentation
        and not result.overlay
        and not result.export_note
    )


@transaction.atomic
def ai_result_attach_exports(*, result: AiResult, exports: Exports, actor: Actor | None = None) -> AiResult:
    """Keep the files made for other software from a done result (DICOM
    Segmentation, PNG overlay) and the note of any that could not be made.
    Once only: a result that has its exports, or is not done, is returned
    unchanged."""
    actor = actor or AI_ENGINE
    result = _locked(result)
    if not exports_pending(result):
        return result
    if exports.segmentation is None and exports.overlay is None and not exports.note.strip():
        raise RuleViolation("Exports must carry a file or say why none could be made.")
    written: list[str] = []
    try:
        if exports.segmentation is not None:
            result.segmentation, result.segmentation_sha256 = _keep(exports.segmentation, "dcm", written)
        if exports.overlay is not None:
            result.overlay, result.overlay_sha256 = _keep(exports.overlay, "png", written)
        result.export_note = exports.note.strip()[:2000]
        result.save(update_fields=["segmentation", "segmentation_sha256", "overlay", "overlay_sha256", "export_note"])
        _result_event(
            actor=actor, action="ai_result.export", result=result, before=result.status, reason=result.export_note
        )
    except BaseException:
        storage.delete_quietly(written)
        raise
    return result


@transaction.atomic
def ai_result_fail(*, result: AiResult, reason: str, actor: Actor | None = None) -> AiResult:
    """Record that the work failed (it may be started again). A finished
    result cannot fail afterwards."""
    actor = actor or AI_ENGINE
    reason = require_reason(reason, "record a failed AI result")
    result = _locked(result)
    if result.status in _SETTLED:
        raise Conflict(f"The AI result {result.pk} is already {result.status}; it cannot fail afterwards.")
    before = result.status
    result.status = AiResultStatus.FAILED
    result.reason = reason
    result.finished_at = timezone.now()
    result.lease_expires_at = None
    result.save(update_fields=["status", "reason", "finished_at", "lease_expires_at"])
    _result_event(actor=actor, action="ai_result.fail", result=result, before=before, reason=reason)
    return result


def _keep(data: bytes, extension: str, written: list[str]) -> tuple[str, str]:
    """Store in the content-addressed storage; returns (name, sha256) and
    notes a newly written file for removal should the write fail."""
    name, new = storage.store(data, extension, RESULT_FOLDER)
    if new:
        written.append(name)
    return name, hashlib.sha256(data).hexdigest()


def _mask_png(mask: np.ndarray) -> bytes:
    if mask.ndim != 2:
        raise RuleViolation(f"A mask must be one (H, W) plane, not of shape {mask.shape}.")
    buffer = io.BytesIO()
    # Fast compression: a binary mask compresses well at any level.
    PILImage.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def _probability_npz(probability: np.ndarray) -> bytes:
    if probability.ndim != 2:
        raise RuleViolation(f"A probability map must be one (H, W) plane, not of shape {probability.shape}.")
    # An .npz file as numpy.savez_compressed writes it, at the fastest
    # deflate level: on the result's critical path, it costs a few ms less
    # for a file a few per cent larger. numpy.load reads it the same way.
    array = io.BytesIO()
    np.save(array, probability.astype(np.float16), allow_pickle=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("probability.npy", array.getvalue())
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars and tuples made plain, and NaN or
    infinity (which PostgreSQL's jsonb refuses) stored as null."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_DOWNLOADABLE = ("segmentation", "overlay", "mask")


@transaction.atomic
def ai_result_download(*, actor: Actor, result: AiResult, kind: str) -> AiResult:
    """Record that a trial admin took a file of an AI result (the DICOM
    Segmentation, the PNG overlay or the mask): the trial must be able to
    show who saw AI output, which file (by sha256) and made by which checkpoint."""
    if kind not in _DOWNLOADABLE:
        raise RuleViolation(f"No such kind of AI output: {kind!r} (one of {', '.join(_DOWNLOADABLE)}).", field="kind")
    image = result.image
    role = authorize(actor, Capability.MANAGE_AI_MODELS, trial=image.trial, site=image.site)
    sha256 = getattr(result, f"{kind}_sha256")
    if not getattr(result, kind) or not sha256:
        raise RuleViolation(f"AI result {result.pk} has no {kind} file to give out.", field="kind")
    audit.record(
        actor=actor,
        role=role,
        action="ai_result.download",
        obj=result,
        trial=image.trial,
        site=image.site,
        after={"kind": kind, "sha256": sha256, "image": image.pk, "model_sha256": result.model_version.sha256},
    )
    return result
