"""Every write of the readings app: the reading policy, tasks made by rule,
drafts, signatures (21 CFR 11.50), corrections, and the record of each
display of the AI second opinion. Each checks its rules and records an
audit event.

Tasks are made by rule, never by hand (`reading_tasks_ensure`, run when a
participant is randomized and when an image is accepted):
- a clinical read for every randomized participant with an accepted image,
  open to the clinician readers of the participant's site; in the
  AI-assisted arm it is sequential: the unaided read is signed first, then
  the AI second opinion is shown, then the final read is signed;
- blinded panel reads for a share of the cases (the policy's
  `panel_fraction`, picked by a keyed hash so the choice is reproducible and
  unpredictable), each by `panel_readers_per_case` blinded readers, each
  reader in their own reproducible random order;
- a re-read of a share of each panel reader's cases once the wash-out has
  passed (intra-reader agreement);
- an adjudication, an independent read by a further blinded reader, when
  the panel reads disagree by the policy's rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import secrets
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from PIL import Image as PILImage
from PIL import ImageDraw

from imaging import storage
from imaging.models import Image, ImageStatus
from randomization.models import Allocation, Arm
from readings import interaction
from readings.models import (
    AdjudicationRule,
    AiDisplay,
    FormKind,
    Phase,
    Read,
    ReadingPolicy,
    ReadingTask,
    ReadStatus,
    TaskKind,
    TaskStatus,
)
from readings.scoring import ReadValidationError, validate_colposcopy_read, validate_thyroid_read
from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import Indication, Participant, Role, Trial
from trial.permissions import Capability
from trial.services.checks import authorize, require_reason

RULES = Actor.system("reading-rules")
USABLE = (ImageStatus.ACCEPTED, ImageStatus.NEEDS_REVIEW)
MAX_DRAFT_BYTES = 64 * 1024
MAX_OUTLINE_POINTS = 2000
# What of the AI second opinion a display shows (AiDisplay.what).
AI_DISPLAY_KINDS = ("suggestion", "contour", "heatmap")

# What each signature means (21 CFR 11.50(a)(3)): shown before signing and
# stored with the signed read.
SIGNATURE_MEANINGS = {
    (TaskKind.CLINICAL, Phase.UNAIDED): (
        "I confirm this is my unaided clinical reading of these images, made before seeing the AI second opinion."
    ),
    (TaskKind.CLINICAL, Phase.FINAL): "I confirm this is my final clinical reading of these images.",
    (TaskKind.PANEL, Phase.FINAL): (
        "I confirm this is my independent reading of these images, made without knowledge of the participant's "
        "allocation, clinical findings or any other reading."
    ),
    (TaskKind.ADJUDICATION, Phase.FINAL): (
        "I confirm this is my independent adjudicating reading of these images, made without knowledge of the "
        "participant's allocation, clinical findings or any other reading."
    ),
}
CORRECTION_MEANING = "I confirm this corrected reading replaces my earlier signed reading, for the reason given."

POLICY_FIELDS = [
    "panel_fraction",
    "panel_readers_per_case",
    "reread_fraction",
    "washout_days",
    "adjudication_rule",
    "clinical_due_days",
    "panel_due_days",
]
_FRACTIONS = {"panel_fraction", "reread_fraction"}
_LIMITS = {
    "panel_readers_per_case": (1, 10),
    "washout_days": (0, 365),
    "clinical_due_days": (1, 365),
    "panel_due_days": (1, 365),
}


# --- The reading policy -----------------------------------------------------------


def reading_policy_for(trial: Trial) -> ReadingPolicy:
    """The trial's policy; the defaults (every case to two panel readers, no
    re-reads, adjudication on high-grade disagreement) are written on first
    use, with a fresh secret seed."""
    policy = ReadingPolicy.objects.filter(trial=trial).first()
    if policy is not None:
        return policy
    with transaction.atomic():
        policy, created = ReadingPolicy.objects.get_or_create(trial=trial, defaults={"seed": secrets.token_hex(32)})
        if created:
            audit.record(
                actor=RULES,
                role="system",
                action="reading_policy.create",
                obj=policy,
                trial=trial,
                after=audit.snapshot(policy, POLICY_FIELDS),
            )
    return policy


def _check_policy_value(name: str, value: Any) -> Any:
    if name in _FRACTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
            raise RuleViolation(f"{name.replace('_', ' ').capitalize()} must be a number from 0 to 1.", field=name)
        return float(value)
    if name in _LIMITS:
        low, high = _LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise RuleViolation(
                f"{name.replace('_', ' ').capitalize()} must be a whole number from {low} to {high}.", field=name
            )
        return value
    if value not in AdjudicationRule.values:
        raise RuleViolation(
            f"Unknown adjudication rule {value!r}; choose one of {', '.join(AdjudicationRule.values)}.",
            field=name,
        )
    return value


@transaction.atomic
def reading_policy_set(*, actor: Actor, trial: Trial, **values: Any) -> ReadingPolicy:
    """Change the reading policy. Tasks already made keep their rules; new
    cases follow the new policy."""
    role = authorize(actor, Capability.CONFIGURE_READINGS, trial=trial, site=None)
    unknown = set(values) - set(POLICY_FIELDS)
    if unknown:
        raise RuleViolation(f"Unknown reading policy settings: {', '.join(sorted(unknown))}.")
    cleaned = {name: _check_policy_value(name, value) for name, value in values.items()}
    policy = ReadingPolicy.objects.select_for_update().get(pk=reading_policy_for(trial).pk)
    before = audit.snapshot(policy, POLICY_FIELDS)
    for name, value in cleaned.items():
        setattr(policy, name, value)
    after = audit.snapshot(policy, POLICY_FIELDS)
    if before == after:
        raise RuleViolation("Nothing to change: the reading policy already has these values.")
    policy.save()
    audit.record(
        actor=actor, role=role, action="reading_policy.change", obj=policy, trial=trial, before=before, after=after
    )
    return policy


# --- Tasks made by rule ------------------------------------------------------------


def _keyed_hash(seed: str, *parts: object) -> str:
    return hashlib.sha256(":".join([seed, *map(str, parts)]).encode()).hexdigest()


def _keyed_fraction(seed: str, *parts: object) -> float:
    """A reproducible number in [0, 1) that nobody without the seed can predict."""
    return int(_keyed_hash(seed, *parts)[:13], 16) / float(16**13)


def form_for(indication: str) -> str:
    return FormKind.COLPOSCOPY if indication == Indication.CERVICAL else FormKind.THYROID


def panel_readers(trial: Trial) -> list[Any]:
    """Active users holding the blinded-reader role in the trial."""
    return list(
        get_user_model()
        .objects.filter(
            memberships__trial=trial,
            memberships__role=Role.BLINDED_READER,
            memberships__active=True,
            is_active=True,
        )
        .distinct()
        .order_by("pk")
    )


def _task_event(
    task: ReadingTask, participant: Participant, action: str, actor: Actor = RULES, role: str = "system"
) -> None:
    audit.record(
        actor=actor,
        role=role,
        action=action,
        obj=task,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        after={
            "kind": task.kind,
            "assignee": task.assignee.get_username() if task.assignee else "",
            "status": task.status,
            "available_from": task.available_from,
            "due_at": task.due_at,
        },
    )


def _new_task(participant: Participant, kind: str, *, due_days: int, **fields: Any) -> ReadingTask:
    now = timezone.now()
    available_from = fields.pop("available_from", now)
    task = ReadingTask.objects.create(
        trial=participant.trial,
        site=participant.site,
        participant=participant,
        kind=kind,
        form=form_for(participant.indication),
        available_from=available_from,
        due_at=available_from + dt.timedelta(days=due_days),
        **fields,
    )
    _task_event(task, participant, "reading_task.create")
    return task


@transaction.atomic
def reading_tasks_ensure(*, participant_id: int) -> list[ReadingTask]:
    """Make the clinical and panel tasks the rules call for, once. Nothing
    before randomization, before an accepted image, or after a withdrawal
    that ends new clinical data. Returns the tasks made now."""
    participant = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("trial", "site", "screening")
        .get(pk=participant_id)
    )
    if not participant.accepts_clinical_data:
        return []
    allocation = Allocation.objects.filter(participant=participant).first()
    if allocation is None or not Image.objects.filter(participant=participant, status__in=USABLE).exists():
        return []
    policy = reading_policy_for(participant.trial)
    existing = set(ReadingTask.objects.filter(participant=participant).values_list("kind", flat=True))
    made: list[ReadingTask] = []
    if TaskKind.CLINICAL not in existing:
        made.append(
            _new_task(
                participant,
                TaskKind.CLINICAL,
                due_days=policy.clinical_due_days,
                sequential=allocation.arm == Arm.AI_ASSISTED,
            )
        )
    if TaskKind.PANEL not in existing and _keyed_fraction(policy.seed, "panel", participant.pk) < policy.panel_fraction:
        readers = sorted(
            panel_readers(participant.trial), key=lambda u: _keyed_hash(policy.seed, "assign", participant.pk, u.pk)
        )
        for reader in readers[: policy.panel_readers_per_case]:
            made.append(
                _new_task(
                    participant,
                    TaskKind.PANEL,
                    due_days=policy.panel_due_days,
                    assignee=reader,
                    order_key=_keyed_hash(policy.seed, "order", reader.pk, participant.pk),
                )
            )
    return made


@transaction.atomic
def reading_tasks_cancel_for_withdrawal(*, participant: Participant, actor: Actor, role: str, reason: str) -> int:
    """Cancel the participant's open tasks (in the withdrawal's transaction)."""
    tasks = list(
        # Only the task rows: FOR UPDATE cannot lock the nullable side of
        # the outer join to the assignee (PostgreSQL refuses it).
        ReadingTask.objects.select_for_update(of=("self",))
        .filter(participant=participant, status__in=(TaskStatus.PENDING, TaskStatus.IN_PROGRESS))
        .select_related("assignee")
    )
    for task in tasks:
        task.status = TaskStatus.CANCELLED
        task.cancelled_reason = f"Participant withdrew: {reason}"
        task.save(update_fields=["status", "cancelled_reason"])
        _task_event(task, participant, "reading_task.cancel", actor=actor, role=role)
    return len(tasks)


# --- Working on a task ---------------------------------------------------------------


def reader_role(actor: Actor, task: ReadingTask) -> str:
    """The role under which the actor reads this task; NotAllowed otherwise.
    A task assigned to someone else is refused by name of the rule only."""
    capability = Capability.READ_CLINICAL if task.kind == TaskKind.CLINICAL else Capability.READ_PANEL
    site = task.site if task.kind == TaskKind.CLINICAL else None
    role = authorize(actor, capability, trial=task.trial, site=site)
    if task.assignee_id is not None and task.assignee_id != actor.user.pk:
        raise NotAllowed("This reading task is assigned to another reader.")
    if (
        task.kind == TaskKind.ADJUDICATION
        and ReadingTask.objects.filter(
            participant_id=task.participant_id, kind=TaskKind.PANEL, assignee=actor.user
        ).exists()
    ):
        raise NotAllowed("You read this case for the panel; its adjudication needs another reader.")
    return role


def _locked_task(task: ReadingTask) -> ReadingTask:
    return (
        ReadingTask.objects.select_for_update(of=("self",))
        .select_related("trial", "site", "participant__screening", "assignee")
        .get(pk=task.pk)
    )


def _check_open(task: ReadingTask) -> None:
    participant = task.participant
    if not participant.accepts_clinical_data or task.status == TaskStatus.CANCELLED:
        raise RuleViolation("This reading task was cancelled: the participant withdrew.")
    if task.status == TaskStatus.DONE:
        raise Conflict("This reading task is finished; a signed read can only be corrected.")
    if task.available_from > timezone.now():
        when = timezone.localtime(task.available_from).strftime("%Y-%m-%d %H:%M")
        raise RuleViolation(f"This re-read opens on {when}, after its wash-out period.")


def current_phase(task: ReadingTask) -> str:
    """The phase the reader works on now: the unaided read of a sequential
    task until it is signed, the final read otherwise."""
    if task.sequential and not task.reads.filter(phase=Phase.UNAIDED, status=ReadStatus.SIGNED).exists():
        return Phase.UNAIDED
    return Phase.FINAL


@transaction.atomic
def reading_task_start(*, actor: Actor, task: ReadingTask) -> ReadingTask:
    """Take the task (a clinical read is open to every clinician at the
    site until one starts it) and open its first read. Idempotent for the
    reader who already started it."""
    task = _locked_task(task)
    role = reader_role(actor, task)
    _check_open(task)
    if task.status == TaskStatus.IN_PROGRESS:
        return task
    now = timezone.now()
    task.assignee = actor.user
    task.status = TaskStatus.IN_PROGRESS
    task.started_at = now
    task.save(update_fields=["assignee", "status", "started_at"])
    phase = Phase.UNAIDED if task.sequential else Phase.FINAL
    Read.objects.create(task=task, phase=phase, reader=actor.user, form=task.form, opened_at=now)
    _task_event(task, task.participant, "reading_task.start", actor=actor, role=role)
    return task


def _check_draft(data: object) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise RuleViolation("A read must be a set of named fields (a JSON object).", field="data")
    size = len(json.dumps(data, default=str))
    if size > MAX_DRAFT_BYTES:
        raise RuleViolation(f"The read is too large ({size} bytes; at most {MAX_DRAFT_BYTES}).", field="data")
    return dict(data)


def _check_outline(task: ReadingTask, outline: object) -> dict[str, Any]:
    """{} or {"image": id, "frame": n, "points": [[x, y], …]} inside that image of this case."""
    if outline in (None, {}):
        return {}
    if not isinstance(outline, Mapping):
        raise RuleViolation("The outline must be an object with image, frame and points.", field="outline")
    image_id, frame, points = outline.get("image"), outline.get("frame", 0), outline.get("points")
    image = (
        Image.objects.filter(pk=image_id, participant_id=task.participant_id, status__in=USABLE).first()
        if isinstance(image_id, int) and not isinstance(image_id, bool)
        else None
    )
    if image is None or image.rows is None or image.columns is None:
        raise RuleViolation("The outline names an image that is not part of this case.", field="outline")
    if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < (image.frames or 1):
        raise RuleViolation(f"The outline's frame must be from 0 to {(image.frames or 1) - 1}.", field="outline")
    if not isinstance(points, list) or not 3 <= len(points) <= MAX_OUTLINE_POINTS:
        raise RuleViolation(f"An outline needs from 3 to {MAX_OUTLINE_POINTS} points.", field="outline")
    cleaned: list[list[float]] = []
    for point in points:
        if (
            not isinstance(point, list | tuple)
            or len(point) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
        ):
            raise RuleViolation("Each outline point must be a pair of numbers [x, y].", field="outline")
        x, y = float(point[0]), float(point[1])
        if not (0 <= x <= image.columns and 0 <= y <= image.rows):
            raise RuleViolation(
                f"The outline point ({x:g}, {y:g}) lies outside the image ({image.columns} × {image.rows} pixels).",
                field="outline",
            )
        cleaned.append([round(x, 2), round(y, 2)])
    return {"image": image.pk, "frame": frame, "points": cleaned}


def _check_phase(task: ReadingTask, phase: object) -> None:
    """The phase a save or signature names must be the one open now."""
    if phase not in Phase.values:
        raise RuleViolation(f"Unknown phase {phase!r}; it is {' or '.join(Phase.values)}.", field="phase")
    if phase != current_phase(task):
        name = "unaided read" if phase == Phase.UNAIDED else "final read"
        raise Conflict(f"The {name} is not open now.")


def _current_read(task: ReadingTask, phase: str) -> Read:
    read = Read.objects.select_for_update().filter(task=task, phase=phase, current=True).first()
    if read is None:
        raise RuleViolation("This read has not been opened; start the task first.")
    return read


def _save_into(read: Read, *, data: dict[str, Any], outline: dict[str, Any] | None, revision: int) -> list[str]:
    if revision != read.revision:
        saved = timezone.localtime(read.saved_at).strftime("%H:%M:%S") if read.saved_at else "earlier"
        raise Conflict(
            f"This read was saved elsewhere (another tab or window) at {saved}; your changes were not saved. "
            "Reload the read, then enter your changes again."
        )
    changed = sorted(name for name in set(data) | set(read.data) if data.get(name) != read.data.get(name))
    read.data = data
    if outline is not None:
        if outline != read.outline:
            changed.append("outline")
        read.outline = outline
    read.revision += 1
    read.saved_at = timezone.now()
    return changed


@transaction.atomic
def read_save_draft(
    *, actor: Actor, task: ReadingTask, phase: str, data: object, revision: int, outline: object = None
) -> Read:
    """Autosave of a draft. `revision` is the one the reader's page holds: a
    save from a page holding an older revision (another tab saved since) is
    refused with a conflict, and nothing is overwritten."""
    task = _locked_task(task)
    role = reader_role(actor, task)
    _check_open(task)
    _check_phase(task, phase)
    read = _current_read(task, phase)
    cleaned_outline = None if outline is None else _check_outline(task, outline)
    changed = _save_into(read, data=_check_draft(data), outline=cleaned_outline, revision=revision)
    read.save(update_fields=["data", "outline", "revision", "saved_at"])
    audit.record(
        actor=actor,
        role=role,
        action="read.save_draft",
        obj=read,
        trial=task.trial,
        site=task.site,
        screening=task.participant.screening,
        after={"phase": phase, "revision": read.revision, "changed": changed},
    )
    return read


def validate_read(form: str, data: Mapping[str, object]) -> dict[str, Any]:
    """The validated values with their computed scores; ReadValidationError
    with every field's problem at once."""
    if form == FormKind.COLPOSCOPY:
        return validate_colposcopy_read(data).to_dict()
    return validate_thyroid_read(data).to_dict()


class SignatureRefused(RuleViolation):
    """A wrong password at signing: nothing is signed, and the refusal is
    recorded once the signing transaction has rolled back."""

    def __init__(self, *, task: ReadingTask, role: str) -> None:
        super().__init__("The password is not correct; the read was not signed.", field="password")
        self.task = task
        self.role = role


def _check_password(actor: Actor, password: object, *, task: ReadingTask, role: str) -> None:
    """The signer re-enters their password (21 CFR 11.200(a))."""
    if not (isinstance(password, str) and password and actor.user.check_password(password)):
        raise SignatureRefused(task=task, role=role)


@transaction.atomic
def _record_refused_signature(actor: Actor, refusal: SignatureRefused) -> None:
    """Failed signature attempts stay in the audit trail (21 CFR 11.300(d))."""
    task = refusal.task
    audit.record(
        actor=actor,
        role=refusal.role,
        action="read.sign_refused",
        obj=task,
        trial=task.trial,
        site=task.site,
        screening=task.participant.screening,
        after={"reason": "wrong password"},
    )


def _store_outline_mask(read: Read) -> None:
    if not read.outline:
        read.outline_mask, read.outline_mask_sha256 = "", ""
        return
    image = Image.objects.get(pk=read.outline["image"])
    assert image.rows is not None and image.columns is not None
    canvas = PILImage.new("L", (image.columns, image.rows), 0)
    ImageDraw.Draw(canvas).polygon([tuple(point) for point in read.outline["points"]], fill=255, outline=255)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False, compress_level=1)
    data = buffer.getvalue()
    name, _ = storage.store(data, "png", folder="outlines")
    read.outline_mask = name
    read.outline_mask_sha256 = hashlib.sha256(data).hexdigest()


def _sign(read: Read, actor: Actor, meaning: str, values: dict[str, Any]) -> None:
    read.values = values
    read.status = ReadStatus.SIGNED
    read.signed_at = timezone.now()
    read.signer_name = actor.user.get_full_name() or actor.user.get_username()
    read.signature_meaning = meaning
    _store_outline_mask(read)


def _sign_event(read: Read, task: ReadingTask, actor: Actor, role: str, action: str, **extra: Any) -> None:
    audit.record(
        actor=actor,
        role=role,
        action=action,
        obj=read,
        trial=task.trial,
        site=task.site,
        screening=task.participant.screening,
        after={
            "phase": read.phase,
            "version": read.version,
            "values": read.values,
            "outline_mask_sha256": read.outline_mask_sha256,
            "signer_name": read.signer_name,
            "signature_meaning": read.signature_meaning,
            "signed_at": read.signed_at,
        },
        **extra,
    )


def read_sign(
    *,
    actor: Actor,
    task: ReadingTask,
    phase: str,
    data: object,
    revision: int,
    password: object,
    outline: object = None,
) -> Read:
    """Validate, save and sign the open read with the reader's password
    (_read_sign); a wrong password is recorded as a refused signature."""
    try:
        return _read_sign(
            actor=actor, task=task, phase=phase, data=data, revision=revision, password=password, outline=outline
        )
    except SignatureRefused as refusal:
        _record_refused_signature(actor, refusal)
        raise


@transaction.atomic
def _read_sign(
    *,
    actor: Actor,
    task: ReadingTask,
    phase: str,
    data: object,
    revision: int,
    password: object,
    outline: object = None,
) -> Read:
    """Validate, save and sign the open read with the reader's password.
    Signing the unaided read opens the final read (and, in the AI-assisted
    arm, the AI second opinion); signing the final read finishes the task."""
    task = _locked_task(task)
    role = reader_role(actor, task)
    _check_open(task)
    _check_phase(task, phase)
    read = _current_read(task, phase)
    cleaned_outline = None if outline is None else _check_outline(task, outline)
    _save_into(read, data=_check_draft(data), outline=cleaned_outline, revision=revision)
    values = validate_read(task.form, read.data)
    _check_password(actor, password, task=task, role=role)
    _sign(read, actor, SIGNATURE_MEANINGS[(TaskKind(task.kind), Phase(phase))], values)
    now = read.signed_at or timezone.now()
    if phase == Phase.UNAIDED:
        read.save()
        Read.objects.create(
            task=task,
            phase=Phase.FINAL,
            reader=actor.user,
            form=task.form,
            opened_at=now,
            data=dict(read.data),
            outline=dict(read.outline),
        )
    else:
        if task.sequential:
            read.interaction = _interaction(task, read)
        read.save()
        task.status = TaskStatus.DONE
        task.completed_at = now
        task.save(update_fields=["status", "completed_at"])
    _sign_event(read, task, actor, role, "read.sign")
    if phase == Phase.FINAL and task.kind == TaskKind.PANEL:
        _after_panel_read(task)
    return read


def _interaction(task: ReadingTask, final: Read) -> dict[str, Any]:
    from ai_engine.models import AiResult

    unaided = Read.objects.get(task=task, phase=Phase.UNAIDED, current=True)
    displays = list(task.ai_displays.values_list("displayed_at", "what"))
    shown_ids = [pk for pk in task.ai_displays.values_list("ai_result_id", flat=True)]
    result = (
        AiResult.objects.filter(pk__in=shown_ids).order_by("pk").first()
        or AiResult.objects.filter(image__participant_id=task.participant_id).order_by("-finished_at", "-pk").first()
    )
    return interaction.interaction_summary(
        form=task.form,
        unaided=unaided.values,
        final=final.values,
        unaided_opened_at=unaided.opened_at,
        unaided_signed_at=unaided.signed_at or unaided.opened_at,
        final_opened_at=final.opened_at,
        final_signed_at=final.signed_at or final.opened_at,
        displays=displays,
        ai_category=(result.category or None) if result is not None else None,
        ai_probability=result.category_probability if result is not None else None,
        ai_result_id=result.pk if result is not None else None,
        ai_status=result.status if result is not None else None,
    )


def _after_panel_read(task: ReadingTask) -> None:
    """A re-read after the wash-out for a share of each reader's cases, and
    an adjudication when the first panel reads of a case disagree."""
    policy = reading_policy_for(task.trial)
    participant = task.participant
    if (
        task.rereading_of_id is None
        and policy.reread_fraction > 0
        and _keyed_fraction(policy.seed, "reread", task.assignee_id, participant.pk) < policy.reread_fraction
    ):
        _new_task(
            participant,
            TaskKind.PANEL,
            due_days=policy.panel_due_days,
            assignee=task.assignee,
            rereading_of=task,
            order_key=_keyed_hash(policy.seed, "reorder", task.assignee_id, participant.pk),
            available_from=timezone.now() + dt.timedelta(days=policy.washout_days),
        )
    _adjudicate_if_needed(participant, policy)


def panel_disagreement(form: str, reads: list[Mapping[str, Any]], rule: str) -> bool:
    if rule == AdjudicationRule.NONE or len(reads) < 2:
        return False
    if rule == AdjudicationRule.HIGH_GRADE:
        return len({interaction.calls_high_grade(form, values) for values in reads}) > 1
    return len({interaction.read_category(form, values) for values in reads}) > 1


def _adjudicate_if_needed(participant: Participant, policy: ReadingPolicy) -> None:
    first_reads = ReadingTask.objects.filter(participant=participant, kind=TaskKind.PANEL, rereading_of__isnull=True)
    if first_reads.exclude(status__in=(TaskStatus.DONE, TaskStatus.CANCELLED)).exists():
        return
    if ReadingTask.objects.filter(participant=participant, kind=TaskKind.ADJUDICATION).exists():
        return
    values = list(
        Read.objects.filter(
            task__in=first_reads, phase=Phase.FINAL, current=True, status=ReadStatus.SIGNED
        ).values_list("values", flat=True)
    )
    if panel_disagreement(form_for(participant.indication), values, policy.adjudication_rule):
        _new_task(participant, TaskKind.ADJUDICATION, due_days=policy.panel_due_days)


def read_correct(
    *, actor: Actor, read: Read, data: object, reason: str, password: object, outline: object = None
) -> Read:
    """Correct a signed read (_read_correct); a wrong password is recorded
    as a refused signature."""
    try:
        return _read_correct(actor=actor, read=read, data=data, reason=reason, password=password, outline=outline)
    except SignatureRefused as refusal:
        _record_refused_signature(actor, refusal)
        raise


@transaction.atomic
def _read_correct(
    *, actor: Actor, read: Read, data: object, reason: str, password: object, outline: object = None
) -> Read:
    """Correct a signed read: a new signed version with the reason; the old
    version is kept. Only its reader may correct it. The unaided read of the
    sequential design cannot be corrected once the AI was shown."""
    task = _locked_task(read.task)
    role = reader_role(actor, task)
    if read.reader_id != actor.user.pk:
        raise NotAllowed("Only the reader who signed a read may correct it.")
    if not task.participant.accepts_clinical_data:
        raise RuleViolation("The participant withdrew; their reads can no longer be changed.")
    old = Read.objects.select_for_update().get(pk=read.pk)
    if not old.is_signed:
        raise RuleViolation("This read is a draft: save or sign it instead of correcting it.")
    if not old.current:
        raise Conflict("This version has already been corrected; correct the current version.")
    reason = require_reason(reason, "correct a signed read")
    if old.phase == Phase.UNAIDED and task.ai_displays.exists():
        raise RuleViolation(
            "The unaided read cannot be corrected: the AI second opinion has been shown since it was signed."
        )
    cleaned_outline = old.outline if outline is None else _check_outline(task, outline)
    cleaned = _check_draft(data)
    values = validate_read(task.form, cleaned)
    if values == old.values and cleaned_outline == old.outline:
        raise RuleViolation("Nothing to correct: the values are unchanged.")
    _check_password(actor, password, task=task, role=role)
    old.current = False
    old.save(update_fields=["current"])
    new = Read(
        task=task,
        phase=old.phase,
        version=old.version + 1,
        reader=actor.user,
        form=task.form,
        data=cleaned,
        outline=cleaned_outline,
        opened_at=timezone.now(),
        supersedes=old,
        correction_reason=reason,
    )
    _sign(new, actor, CORRECTION_MEANING, values)
    if new.phase == Phase.FINAL and task.sequential:
        # The comparison with the unaided read and the AI follows the
        # corrected values; the time to the decision stays the original's.
        timing = {key: old.interaction[key] for key in ("seconds_to_final_decision",) if key in old.interaction}
        new.interaction = {**_interaction(task, new), **timing}
    new.revision = 1
    new.saved_at = new.signed_at
    new.save()
    audit.record(
        actor=actor,
        role=role,
        action="read.correct",
        obj=new,
        trial=task.trial,
        site=task.site,
        screening=task.participant.screening,
        before={"version": old.version, "values": old.values, "outline_mask_sha256": old.outline_mask_sha256},
        after={
            "version": new.version,
            "values": new.values,
            "outline_mask_sha256": new.outline_mask_sha256,
            "signer_name": new.signer_name,
            "signature_meaning": new.signature_meaning,
            "signed_at": new.signed_at,
        },
        reason=reason,
    )
    if task.kind == TaskKind.PANEL and task.rereading_of_id is None:
        _adjudicate_if_needed(task.participant, reading_policy_for(task.trial))
    return new


@transaction.atomic
def ai_display_record(*, actor: Actor, task: ReadingTask, ai_result: Any, what: str) -> AiDisplay:
    """Record one display of the AI second opinion. The caller has read the
    result through readings.selectors.ai_second_opinion, which decides that
    it may be shown; this re-checks the rules that matter most, and that
    the record names this case's result (the interaction record is built
    from it)."""
    role = reader_role(actor, task)
    if not task.sequential or task.kind != TaskKind.CLINICAL:
        raise NotAllowed("The AI second opinion is not shown for this read.")
    if current_phase(task) != Phase.FINAL:
        raise NotAllowed("The AI second opinion is shown once the unaided read is signed.")
    if ReadingTask.objects.filter(pk=task.pk, status=TaskStatus.CANCELLED).exists():
        raise RuleViolation("This reading task was cancelled: the participant withdrew.")
    if ai_result.image.participant_id != task.participant_id:
        raise NotAllowed("This AI result is not one of this case's.")
    if what not in AI_DISPLAY_KINDS:
        raise RuleViolation(f"Unknown AI display {what!r}; it is one of {', '.join(AI_DISPLAY_KINDS)}.", field="what")
    display = AiDisplay.objects.create(
        task=task, ai_result=ai_result, reader=actor.user, what=what, displayed_at=timezone.now()
    )
    audit.record(
        actor=actor,
        role=role,
        action="ai_result.display",
        obj=display,
        trial=task.trial,
        site=task.site,
        screening=task.participant.screening,
        after={"task": task.pk, "ai_result": ai_result.pk, "what": what},
    )
    return display


__all__ = [
    "AI_DISPLAY_KINDS",
    "CORRECTION_MEANING",
    "SIGNATURE_MEANINGS",
    "ReadValidationError",
    "ai_display_record",
    "current_phase",
    "form_for",
    "panel_disagreement",
    "panel_readers",
    "read_correct",
    "read_save_draft",
    "read_sign",
    "reader_role",
    "reading_policy_for",
    "reading_policy_set",
    "reading_task_start",
    "reading_tasks_cancel_for_withdrawal",
    "reading_tasks_ensure",
    "validate_read",
]
