"""The inference pipeline inside the trial: from an accepted image to a
stored AI result, through the broker and a worker, reliably.

Delivery is at least once; the result is exactly once:

* **The row is the outbox.** Accepting an image creates its AI result,
  queued, for the trial's active model (`queue_image`), then hands a job to
  the broker. When the broker is down the row stays with no `dispatched_at`
  and the sweeper (`dispatch_pending`, run by Celery beat every 30 s) sends
  it once the broker answers. The sweeper also re-sends jobs a
  broker lost (queued long after dispatch), takes back work whose worker
  died on another machine (lease ended), and queues images whose
  acceptance signal was lost, and makes the exports (DICOM Segmentation,
  overlay) of results stored by a worker that stopped before making them.
* **One result per image × model version** (a unique constraint); a job
  delivered twice finds its result finished, or running in a live worker,
  and does nothing.
* **Claims.** A worker claims its result (and, micro-batching, up to
  max_batch − 1 other queued results of the same model, skipping rows
  another worker is claiming) in one short transaction, marking them
  running under its host:pid with a lease. Inference runs outside any
  transaction. A redelivered job takes over a result whose claimer's
  process is dead (same host) or whose lease ended.
* **Errors.** Bad input (a stored file that fails its digest, pixels that
  do not decode) fails the result once, with its reason. A transient error
  (database, storage, broker) gives the claimed results back to the queue
  and the task retries with exponential backoff; when the retries are spent
  the result fails with the last error. A GPU that is missing or runs out of
  memory hands the work to the CPU, and the result records the device.
* **Withdrawal.** A participant's withdrawal from AI processing cancels
  their pending results in the withdrawal's transaction; a worker that was
  running one finds it cancelled and keeps nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import torch
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ai_engine import services
from ai_engine.checkpoint import CheckpointError
from ai_engine.device import DeviceError, choose_device
from ai_engine.exports import ExportError, dicom_bytes, dicom_segmentation, overlay_png
from ai_engine.inference import InferenceEngine, InferenceInput, InferenceResult
from ai_engine.inference.records import STATUS_DONE, InferenceError
from ai_engine.models import AiResult, AiResultStatus, ModelVersion, TrialModel
from ai_engine.selectors import active_model_for, ai_result_mask
from ai_engine.services import claimer_alive
from imaging import storage
from imaging.models import FileFormat, Image, ImageKind, ImageStatus
from imaging.pipeline import dicom, photo
from imaging.pipeline.errors import Rejected
from imaging.storage import StoredFileCorrupt

logger = logging.getLogger(__name__)

# Errors worth another try later: the database, the storage or the broker
# was unavailable. Anything about the input itself is not retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError, ConnectionError)
# How a publish retries before the job is left in the outbox (short: it runs
# inside an upload request).
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5}


class BadInput(Exception):
    """The stored image cannot be given to the model (its reason is kept)."""


def lease_seconds() -> float:
    return float(getattr(settings, "AI_INFERENCE_LEASE_SECONDS", 600))


def max_batch() -> int:
    return max(1, int(getattr(settings, "AI_INFERENCE_MAX_BATCH", 4)))


def worker_identity() -> str:
    """host:pid of this process (a claim's owner)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- Queueing and dispatch ---------------------------------------------------------------


def queue_image(image_id: int, *, send: bool = True) -> AiResult | None:
    """Create the queued result of the trial's active model for an accepted
    image and (unless send is False: the sweeper sends it with the rest)
    hand its job to the broker. None when there is nothing to do (image
    rejected or gone, participant withdrawn from AI processing, no model
    deployed for the indication)."""
    image = Image.objects.select_related("participant", "trial").filter(pk=image_id).first()
    if image is None or not image.is_usable or not image.participant.accepts_ai_processing:
        return None
    model_version = active_model_for(trial=image.trial, indication=image.participant.indication)
    if model_version is None:
        logger.info(
            "No AI model is deployed for %s in %s; image %s waits.",
            image.participant.indication,
            image.trial.code,
            image_id,
        )
        return None
    result = services.ai_result_queue(image=image, model_version=model_version)
    if send and result.status == AiResultStatus.QUEUED and result.dispatched_at is None:
        dispatch([result.pk])
    return result


def on_image_accepted(image_id: int) -> None:
    """Receiver of imaging.signals.image_accepted (sent after the upload
    commits). It must never fail the upload: anything that goes wrong here
    is logged and repaired by the sweeper."""
    try:
        queue_image(image_id)
    except Exception:
        logger.exception("Could not queue the AI job of image %s; the sweeper will.", image_id)


def dispatch(result_ids: Iterable[int]) -> list[int]:
    """Publish one job per result on the inference queue and note which were
    sent. Stops at the first publish that fails (the broker is down): those
    left keep no dispatched_at and the sweeper sends them later."""
    from ai_engine.tasks import run_inference

    sent: list[int] = []
    for result_id in result_ids:
        try:
            run_inference.apply_async((result_id,), retry=True, retry_policy=PUBLISH_RETRY_POLICY)
        except Exception as error:  # kombu raises its own OperationalError, or socket errors
            logger.warning(
                "The broker did not take the AI job of result %s (%s); it stays in the outbox.", result_id, error
            )
            break
        sent.append(result_id)
    if sent:
        services.ai_results_mark_dispatched(sent)
    return sent


@dataclass(frozen=True)
class Sweep:
    queued_images: int
    dispatched: int
    waiting: int


def dispatch_pending(*, limit: int = 500) -> Sweep:
    """The sweeper: queue accepted images that have no AI result (a lost
    signal), then send the jobs that need sending: never dispatched (broker
    was down), dispatched long ago and still queued (a broker that lost its
    messages), running with an ended lease (a worker that died elsewhere)."""
    for result in AiResult.objects.filter(pk__in=exports_missing(limit=limit)).select_related("image", "model_version"):
        export_result(result)
    queued_images = 0
    for image_id in images_without_result(limit=limit):
        # Sent below with the other due jobs, so that the sweep counts it.
        if queue_image(image_id, send=False) is not None:
            queued_images += 1
    now = timezone.now()
    redispatch_after = dt.timedelta(seconds=float(getattr(settings, "AI_INFERENCE_REDISPATCH_SECONDS", 900)))
    due = (
        AiResult.objects.filter(
            Q(status=AiResultStatus.QUEUED, dispatched_at__isnull=True)
            | Q(status=AiResultStatus.QUEUED, dispatched_at__lt=now - redispatch_after)
            | Q(status=AiResultStatus.RUNNING, lease_expires_at__lt=now)
        )
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    due_ids = list(due)
    # A re-sent job counts from now, so it is not re-sent at every sweep.
    AiResult.objects.filter(pk__in=due_ids).update(dispatched_at=None)
    sent = dispatch(due_ids)
    return Sweep(queued_images=queued_images, dispatched=len(sent), waiting=len(due_ids) - len(sent))


def images_without_result(*, limit: int = 500) -> list[int]:
    """Usable images, in trials with a deployed model for their indication,
    of participants who allow AI processing, that no model has a result for."""
    deployed = TrialModel.objects.filter(
        trial=OuterRef("trial"), indication=OuterRef("participant__screening__indication"), active=True
    )
    return list(
        Image.objects.filter(status__in=[ImageStatus.ACCEPTED, ImageStatus.NEEDS_REVIEW])
        .filter(participant__ai_processing_stopped=False, participant__data_withdrawn=False)
        .filter(Exists(deployed))
        .exclude(Exists(AiResult.objects.filter(image=OuterRef("pk"))))
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )


def cancel_for_withdrawal(*, participant: Any, actor: Any, role: str, reason: str) -> list[AiResult]:
    """Receiver side of a withdrawal from AI processing (inside its transaction)."""
    return services.ai_results_cancel(
        participant=participant, actor=actor, role=role, reason=f"The participant withdrew from AI processing: {reason}"
    )


# --- Claiming --------------------------------------------------------------------------


def claim(result_id: int, *, worker: str, batch_limit: int) -> list[AiResult]:
    """Mark the job's result (and up to batch_limit − 1 other queued results
    of the same model) running for this worker, in one short transaction;
    [] when there is nothing for it to do (services.ai_results_claim)."""
    # A job delivered after its result was finished (by a micro-batch of
    # another job, or before a redelivery) ends here, on one light read: a
    # settled result never changes again, and one running in a live worker
    # is left to it, as the claim under lock would.
    state = AiResult.objects.filter(pk=result_id).values("status", "claimed_by", "lease_expires_at").first()
    if state is None or state["status"] not in (AiResultStatus.QUEUED, AiResultStatus.RUNNING):
        return []
    running = AiResult(claimed_by=state["claimed_by"], lease_expires_at=state["lease_expires_at"])
    if state["status"] == AiResultStatus.RUNNING and state["claimed_by"] != worker and claimer_alive(running):
        return []
    return services.ai_results_claim(
        result_id=result_id, worker=worker, lease_seconds=lease_seconds(), batch_limit=batch_limit
    )


# --- Running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    input: InferenceInput
    display: np.ndarray  # 8-bit frames (F, H, W) or (F, H, W, 3), for the overlay
    dataset: pydicom.Dataset | None  # the de-identified DICOM header, for the Segmentation


def load_input(image: Image) -> Loaded:
    """The stored, de-identified image decoded for the model; BadInput when
    its file is missing, altered or does not decode."""
    try:
        data = storage.read_verified(image.file.name, image.sha256)
    except StoredFileCorrupt as error:
        raise BadInput(f"bad-input: the stored image fails its integrity check ({error})") from error
    except FileNotFoundError as error:
        raise BadInput(f"bad-input: the stored image file {image.file.name} is missing") from error
    modality = "ultrasound" if image.kind == ImageKind.ULTRASOUND else "photo"
    try:
        if image.file_format == FileFormat.DICOM:
            dataset = dicom.read(data)
            display = dicom.to_display(dataset, dicom.decode(dataset))
            pixel_dataset: pydicom.Dataset | None = dataset
        else:
            display = photo.decode_rgb(data, int(getattr(settings, "IMAGING_MAX_PIXELS", 150_000_000)))[np.newaxis]
            pixel_dataset = None
        pixels = display[0] if display.shape[0] == 1 else display
        item = InferenceInput(
            name=f"image {image.pk}", pixels=pixels, modality=modality, pixel_spacing_mm=image.pixel_spacing_mm
        )
    except (Rejected, InferenceError, ValueError) as error:
        raise BadInput(f"bad-input: the stored image does not decode ({error})") from error
    return Loaded(item, display, pixel_dataset)


_engines: dict[str, InferenceEngine] = {}
_engines_lock = threading.Lock()


def engine_for(model_version: ModelVersion) -> InferenceEngine:
    """The engine of this checkpoint, loaded once per process (its sha256 is
    verified on load). AI_DEVICE "cuda" on a machine without a usable GPU
    runs on the CPU and says so in every result's device."""
    with _engines_lock:
        engine = _engines.get(model_version.sha256)
        if engine is not None:
            return engine
        threads = int(getattr(settings, "AI_TORCH_THREADS", 0) or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        requested = str(getattr(settings, "AI_DEVICE", "") or "")
        fallback = ""
        try:
            device = str(choose_device(requested or None))
        except DeviceError as error:
            device, fallback = "cpu", f"cpu (fallback: {error})"
        engine = InferenceEngine(services.stored_path(model_version), device=device, max_batch=max_batch())
        if engine.sha256 != model_version.sha256:
            raise CheckpointError(
                f"The stored checkpoint of {model_version} has sha256 {engine.sha256}, not {model_version.sha256}."
            )
        if fallback:
            engine.device_label = fallback
        _engines[model_version.sha256] = engine
        return engine


def make_exports(result: AiResult, loaded: Loaded, mask: np.ndarray, frame_index: int | None) -> services.Exports:
    """The DICOM Segmentation (DICOM input) and PNG overlay of a done
    result's mask. An export that cannot be made is noted, not fatal: the
    mask and figures are the result."""
    notes: list[str] = []
    overlay: bytes | None = None
    segmentation: bytes | None = None
    try:
        overlay = overlay_png(image_rgb_or_grey=loaded.display[frame_index or 0], mask=mask)
    except (ExportError, ValueError, IndexError) as error:
        notes.append(f"overlay: {error}")
    if loaded.dataset is not None:
        model_version = result.model_version
        try:
            segmentation = dicom_bytes(
                dicom_segmentation(
                    source=loaded.dataset,
                    mask=mask,
                    frame_index=frame_index,
                    model_name=model_version.name,
                    model_version=model_version.version,
                    model_sha256=model_version.sha256,
                )
            )
        except (ExportError, ValueError, AttributeError, TypeError) as error:
            notes.append(f"DICOM Segmentation: {error}")
    return services.Exports(segmentation=segmentation, overlay=overlay, note="; ".join(notes))


def export_result(result: AiResult, loaded: Loaded | None = None, mask: np.ndarray | None = None) -> AiResult:
    """Make and attach the exports of a done result that has none yet, from
    the stored image and mask unless they are given (right after inference)."""
    if not services.exports_pending(result):
        return result
    try:
        loaded = loaded if loaded is not None else load_input(result.image)
        mask = mask if mask is not None else ai_result_mask(result)
    except (BadInput, StoredFileCorrupt, FileNotFoundError) as error:
        return services.ai_result_attach_exports(result=result, exports=services.Exports(note=f"no exports: {error}"))
    exports = make_exports(result, loaded, mask, result.frame_index)
    return services.ai_result_attach_exports(result=result, exports=exports)


def exports_missing(*, older_than_seconds: float = 60.0, limit: int = 100) -> list[int]:
    """Done results still without exports some time after they were stored
    (their worker stopped between the two steps)."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    return list(
        AiResult.objects.filter(
            status=AiResultStatus.DONE, segmentation="", overlay="", export_note="", finished_at__lt=cutoff
        )
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )


def process(result_id: int, *, worker: str | None = None, batch_limit: int | None = None) -> list[AiResult]:
    """A job: claim, infer in one forward pass per batch, store. Returns the
    results this call finished (done, abstained or failed). A transient
    error gives every claimed, unfinished result back to the queue and is
    raised for the task to retry."""
    worker = worker or worker_identity()
    claimed = claim(result_id, worker=worker, batch_limit=batch_limit if batch_limit is not None else max_batch())
    if not claimed:
        return []
    try:
        return _run(claimed)
    except BaseException as error:
        release(claimed, f"transient: {type(error).__name__}: {error}"[:500])
        raise


def _run(claimed: list[AiResult]) -> list[AiResult]:
    finished: list[AiResult] = []
    ready: list[tuple[AiResult, Loaded]] = []
    for result in claimed:
        try:
            ready.append((result, load_input(result.image)))
        except BadInput as error:
            finished.append(services.ai_result_fail(result=result, reason=str(error)))
    if not ready:
        return finished
    try:
        engine = engine_for(claimed[0].model_version)
    except (CheckpointError, InferenceError) as error:
        # The registered checkpoint itself is unusable: no retry can help.
        for result, _ in ready:
            finished.append(services.ai_result_fail(result=result, reason=f"model-unusable: {error}"))
        return finished
    outcomes = engine.run([loaded.input for _, loaded in ready])
    stored_now: list[tuple[AiResult, Loaded, InferenceResult]] = []
    for (result, loaded), outcome in zip(ready, outcomes, strict=True):
        stored = services.ai_result_store(result=result, outcome=outcome)
        # A withdrawal that landed during inference cancelled it: nothing was kept.
        if stored.status != AiResultStatus.CANCELLED:
            stored_now.append((stored, loaded, outcome))
    # The result is stored (a reader can see it); the exports for other
    # software follow. Should this stop half-way, the sweeper makes them.
    for stored, loaded, outcome in stored_now:
        if outcome.status == STATUS_DONE and outcome.mask is not None:
            stored = export_result(stored, loaded, outcome.mask)
        finished.append(stored)
    return finished


def release(claimed: list[AiResult], reason: str) -> None:
    """Give claimed results that are still running back to the queue; a
    database that is down is left to the lease and the sweeper."""
    for result in claimed:
        try:
            services.ai_result_release(result=result, reason=reason)
        except DatabaseError:
            logger.warning("Could not give AI result %s back; its lease will end.", result.pk)


def give_up(result_id: int, error: BaseException) -> AiResult | None:
    """The retries are spent: fail the result with the last error."""
    result = AiResult.objects.filter(pk=result_id).first()
    if result is None or result.status not in (AiResultStatus.QUEUED, AiResultStatus.RUNNING):
        return result
    return services.ai_result_fail(
        result=result, reason=f"failed after retries: {type(error).__name__}: {error}"[:2000]
    )


def backoff_seconds(retries: int) -> float:
    """Exponential backoff: 2, 4, 8 … seconds, at most AI_INFERENCE_RETRY_MAX_SECONDS."""
    base = float(getattr(settings, "AI_INFERENCE_RETRY_BASE_SECONDS", 2))
    return min(base * (2**retries), float(getattr(settings, "AI_INFERENCE_RETRY_MAX_SECONDS", 120)))
