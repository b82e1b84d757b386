"""Every write of the model registry: registering a checkpoint, deploying a
version for a trial's indication, retiring a version; and of the AI results
(queued, started, stored, failed), each tied to the version that made it.
Each checks its rules and records an audit event in the same transaction.

Why the lock after recruitment: the AI second opinion is the trial's
intervention, so the model producing it is fixed when recruitment opens;
changing it afterwards is a protocol matter that needs a trial admin, a
reason and an audit event naming both checkpoints by sha256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import shutil
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from PIL import Image as PILImage

from ai_engine.checkpoint import CheckpointError, file_sha256, load_checkpoint, side_file_path
from ai_engine.inference.records import STATUS_ABSTAINED, STATUS_DONE, InferenceResult
from ai_engine.models import STORAGE_FOLDER, AiResult, AiResultStatus, ModelStatus, ModelVersion, TrialModel
from imaging import storage
from imaging.models import Image
from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import Indication, Participant, Trial, TrialStatus
from trial.permissions import Capability, role_can
from trial.selectors import memberships_of
from trial.services.checks import authorize, clean_model, require_reason

MODEL_CARD_NAME = "MODEL_CARD.md"
# The small checkpoints trained on synthetic images that ship with the code
# (demo, tests), one per indication: grey ultrasound and RGB colposcopy.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_CHECKPOINT = WEIGHTS_DIR / "combined-thyroid-synthetic.pt"
SHIPPED_CHECKPOINTS: dict[str, Path] = {
    Indication.THYROID: SHIPPED_CHECKPOINT,
    Indication.CERVICAL: WEIGHTS_DIR / "combined-colposcopy-synthetic.pt",
}
# Trials whose participants may still get AI opinions from their deployed model.
_MODEL_IN_USE_STATUSES = (TrialStatus.RECRUITING, TrialStatus.RECRUITMENT_CLOSED)
_PUBLIC_FIELDS = ["name", "version", "sha256", "arch", "indication", "status", "file"]


def stored_name(sha256: str) -> str:
    return f"{STORAGE_FOLDER}/{sha256}.pt"


def stored_path(model_version: ModelVersion) -> Path:
    """The checkpoint's path on disk; its side file lies beside it."""
    return Path(default_storage.path(model_version.file.name))


# --- Who may act ---------------------------------------------------------------------


def _authorize_registry(actor: Actor) -> str:
    """The registry is shared by all trials: the system, a superuser, or a
    user who manages AI models in some trial."""
    if actor.is_system:
        return "system"
    if getattr(actor.user, "is_superuser", False):
        return "superuser"
    roles = [m.role for m in memberships_of(actor.user) if role_can(m.role, Capability.MANAGE_AI_MODELS)]
    if not roles:
        raise NotAllowed("Only a trial admin may change the model registry.")
    return roles[0]


# --- Registration ----------------------------------------------------------------------


@transaction.atomic
def model_register(
    *,
    actor: Actor,
    path: str | os.PathLike[str],
    name: str,
    version: str,
    indication: str,
    intended_use: str = "",
    card_text: str | None = None,
) -> ModelVersion:
    """Verify a checkpoint against its side file, copy it into the registry's
    storage and record it as a draft version. The model card is `card_text`,
    else the card beside the file (FILE's name with .md, or MODEL_CARD.md), if any. Nothing is written when
    anything fails."""
    role = _authorize_registry(actor)
    path = Path(path)
    name, version = name.strip(), version.strip()
    if indication not in Indication.values:
        raise RuleViolation(
            f"Unknown indication {indication!r}; choose one of {', '.join(Indication.values)}.", field="indication"
        )
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise RuleViolation(str(error), field="path") from error
    if card_text is None:
        cards = [path.with_suffix(".md"), path.with_name(MODEL_CARD_NAME)]
        card_file = next((card for card in cards if card.is_file()), None)
        card_text = card_file.read_text(encoding="utf-8") if card_file is not None else ""
    existing = ModelVersion.objects.filter(sha256=checkpoint.sha256).first()
    if existing is not None:
        raise Conflict(
            f"This checkpoint (sha256 {checkpoint.sha256}) is already registered "
            f"as {existing.name} {existing.version}.",
            field="path",
        )
    if ModelVersion.objects.filter(name=name, version=version).exists():
        raise Conflict(f"A model {name} version {version} is already registered.", field="version")
    model_version = ModelVersion(
        name=name,
        version=version,
        sha256=checkpoint.sha256,
        file=stored_name(checkpoint.sha256),
        size_bytes=path.stat().st_size,
        arch=checkpoint.arch,
        architecture=checkpoint.architecture,
        training=checkpoint.training,
        metrics=checkpoint.metrics,
        preprocessing=checkpoint.preprocessing,
        categories=list(checkpoint.categories),
        indication=indication,
        intended_use=intended_use.strip(),
        model_card=card_text,
        status=ModelStatus.DRAFT,
        registered_by=actor.user,
        registered_by_username=actor.username,
    )
    clean_model(model_version, exclude=["file", "registered_by"])
    written = _store_checkpoint(path, checkpoint.sha256)
    try:
        with transaction.atomic():
            model_version.save(force_insert=True)
            audit.record(
                actor=actor,
                role=role,
                action="ai_model.register",
                obj=model_version,
                after=audit.snapshot(model_version, _PUBLIC_FIELDS),
            )
    except IntegrityError as error:
        discard_files(written)
        # A concurrent registration of the same checkpoint or name won.
        raise Conflict(f"The model {name} {version} (sha256 {checkpoint.sha256}) is already registered.") from error
    except BaseException:
        discard_files(written)
        raise
    return model_version


def _store_checkpoint(source: Path, sha256: str) -> list[Path]:
    """Copy the checkpoint to models/<sha256>.pt (and write its side file),
    checking the copy's digest; returns the files newly written, for removal
    should the registration fail. An identical file already stored is kept."""
    target = Path(default_storage.path(stored_name(sha256)))
    target.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        if not (target.is_file() and file_sha256(target) == sha256):
            descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(descriptor)
            try:
                shutil.copyfile(source, temporary)
                copied = file_sha256(temporary)
                if copied != sha256:
                    raise RuleViolation(
                        f"The checkpoint {source} changed while it was being registered "
                        f"(sha256 {copied}, expected {sha256}).",
                        field="path",
                    )
                os.replace(temporary, target)
            finally:
                Path(temporary).unlink(missing_ok=True)
            written.append(target)
        side_file = side_file_path(target)
        line = f"{sha256}  {target.name}\n"
        if not (side_file.is_file() and side_file.read_text(encoding="utf-8") == line):
            side_file.write_text(line, encoding="utf-8")
            written.append(side_file)
    except OSError as error:
        discard_files(written)
        raise RuleViolation(f"The checkpoint could not be stored ({error.__class__.__name__}: {error}).") from error
    except BaseException:
        discard_files(written)
        raise
    return written


def discard_files(paths: list[Path]) -> None:
    for file_path in paths:
        try:
            file_path.unlink(missing_ok=True)
        except OSError:
            continue


def discard_unregistered_checkpoint(sha256: str) -> None:
    """Remove a stored checkpoint that no registration refers to (after an
    enclosing transaction rolled a registration back)."""
    if ModelVersion.objects.filter(sha256=sha256).exists():
        return
    target = Path(default_storage.path(stored_name(sha256)))
    discard_files([target, side_file_path(target)])


# --- Deployment ------------------------------------------------------------------------


@transaction.atomic
def model_activate(*, actor: Actor, trial: Trial, model_version: ModelVersion, reason: str = "") -> TrialModel:
    """Deploy a version for its indication in a trial, replacing the active
    one (kept in the history). Before recruitment opens no reason is needed;
    from then on the model is locked and a change needs a reason."""
    role = authorize(actor, Capability.MANAGE_AI_MODELS, trial=trial, site=None)
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    model_version = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    indication = model_version.indication
    if indication not in trial.indications:
        raise RuleViolation(
            f"{model_version.name} {model_version.version} is registered for {model_version.get_indication_display()}, "
            f"which trial {trial.code} does not study.",
            field="model_version",
        )
    if model_version.status == ModelStatus.RETIRED:
        raise RuleViolation(
            f"{model_version.name} {model_version.version} is retired and cannot be deployed.", field="model_version"
        )
    reason = (reason or "").strip()
    if trial.status != TrialStatus.SETUP:
        reason = require_reason(
            reason, f"change the AI model of trial {trial.code} after recruitment has opened (the model is locked)"
        )
    elif len(reason) > 2000:
        raise RuleViolation("The reason must be at most 2000 characters.", field="reason")
    previous = (
        TrialModel.objects.select_for_update()
        .select_related("model_version")
        .filter(trial=trial, indication=indication, active=True)
        .first()
    )
    if previous is not None and previous.model_version_id == model_version.pk:
        raise Conflict(
            f"{model_version.name} {model_version.version} is already the active {indication} model of {trial.code}."
        )
    now = timezone.now()
    if previous is not None:
        previous.active = False
        previous.deactivated_at = now
        previous.save(update_fields=["active", "deactivated_at"])
        _refresh_status(previous.model_version)
    deployment = TrialModel.objects.create(
        trial=trial,
        indication=indication,
        model_version=model_version,
        activated_by=actor.user,
        activated_by_username=actor.username,
        reason=reason,
    )
    _refresh_status(model_version)
    audit.record(
        actor=actor,
        role=role,
        action="ai_model.activate",
        obj=deployment,
        trial=trial,
        before=_deployment_facts(previous.model_version) if previous is not None else None,
        after=_deployment_facts(model_version),
        reason=reason,
    )
    return deployment


def _deployment_facts(model_version: ModelVersion) -> dict[str, Any]:
    return {
        "model_version": model_version.pk,
        "name": model_version.name,
        "version": model_version.version,
        "sha256": model_version.sha256,
        "indication": model_version.indication,
    }


def _refresh_status(model_version: ModelVersion) -> None:
    """Active while deployed in any trial; draft otherwise; retired stays retired."""
    if model_version.status == ModelStatus.RETIRED:
        return
    deployed = TrialModel.objects.filter(model_version=model_version, active=True).exists()
    status = ModelStatus.ACTIVE if deployed else ModelStatus.DRAFT
    if model_version.status != status:
        model_version.status = status
        model_version.save(update_fields=["status"])


# --- Retirement ------------------------------------------------------------------------


@transaction.atomic
def model_retire(*, actor: Actor, model_version: ModelVersion, reason: str) -> ModelVersion:
    """Withdraw a version from further deployment. Refused while a trial that
    is still producing AI opinions (recruiting, or recruitment closed with
    follow-up reads) has it deployed: replace it there first. Deployments in
    trials in set-up or completed are ended with it (history kept)."""
    model_version = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    deployments = list(
        TrialModel.objects.select_for_update().select_related("trial").filter(model_version=model_version, active=True)
    )
    role = _authorize_registry(actor)
    for deployment in deployments:
        # Ending a trial's deployment is that trial's admin's decision.
        role = authorize(actor, Capability.MANAGE_AI_MODELS, trial=deployment.trial, site=None)
    reason = require_reason(reason, "retire a model")
    if model_version.status == ModelStatus.RETIRED:
        raise Conflict(f"{model_version.name} {model_version.version} is already retired.")
    in_use = sorted(d.trial.code for d in deployments if d.trial.status in _MODEL_IN_USE_STATUSES)
    if in_use:
        raise Conflict(
            f"{model_version.name} {model_version.version} is the active model of trial(s) {', '.join(in_use)}, "
            "which still produce AI opinions: deploy another model there first."
        )
    before = audit.snapshot(model_version, ["status"])
    now = timezone.now()
    for deployment in deployments:
        deployment.active = False
        deployment.deactivated_at = now
        deployment.save(update_fields=["active", "deactivated_at"])
    model_version.status = ModelStatus.RETIRED
    model_version.retired_at = now
    model_version.retirement_reason = reason
    model_version.save(update_fields=["status", "retired_at", "retirement_reason"])
    audit.record(
        actor=actor,
        role=role,
        action="ai_model.retire",
        obj=model_version,
        before=before,
        after={
            **audit.snapshot(model_version, ["status", "sha256"]),
            "deployments_ended": [d.trial.code for d in deployments],
        },
        reason=reason,
    )
    return model_version


# --- AI results ------------------------------------------------------------------------

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
