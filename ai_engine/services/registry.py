"""The model registry's writes: registering a checkpoint, deploying a
version for a trial's indication, retiring a version. Each checks its rules
and records an audit event in the same transaction.

Why the lock after recruitment: the AI second opinion is the trial's
intervention, so the model producing it is fixed when recruitment opens;
changing it afterwards is a protocol matter that needs a trial admin, a
reason and an audit event naming both checkpoints by sha256.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from ai_engine.checkpoint import CheckpointError, file_sha256, load_checkpoint, side_file_path
from ai_engine.models import STORAGE_FOLDER, ModelStatus, ModelVersion, TrialModel
from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import Indication, Trial, TrialStatus
from trial.permissions import Capability, role_can
from trial.selectors import memberships_of
from trial.services.checks import authorize, clean_model, require_reason

MODEL_CARD_NAME = "MODEL_CARD.md"
# The small checkpoints trained on synthetic images that ship with the code
# (demo, tests), one per indication: grey ultrasound and RGB colposcopy.
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
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
