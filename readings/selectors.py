"""What each reader may see of reading tasks, reads and the AI second
opinion: the one place where blinding is decided for pages, the API and
the image files they serve.

Rules:
- Clinician readers see the clinical tasks of their sites: those open to
  every clinician there and their own. They see the participant's study id
  and arm, the images, and their own reads.
- The AI second opinion is shown to the reader of a clinical task of the
  AI-assisted arm only, and only once the unaided read is signed
  (`ai_second_opinion`). Everywhere else it does not exist (404).
- Blinded panel readers see their own panel tasks (and adjudications open
  to them) under a neutral case label: the images and their own reads,
  never the study id, site, arm, AI output, the clinical read, other
  readers' reads or the reference standard.
- Monitors (their sites) and trial admins oversee tasks and signed reads
  (`tasks_overseen`), without AI payloads.
- No capability → PermissionDenied (403); a task outside the user's scope
  → Http404; a task in scope but assigned to another reader → 403.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Case, CharField, Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from ai_engine.models import AiResult, AiResultStatus
from imaging.models import Image, ImageKind
from randomization.models import Allocation, Arm
from readings.models import Phase, Read, ReadingTask, ReadStatus, TaskKind, TaskStatus
from readings.services import USABLE, current_phase
from trial.models import Role, Trial
from trial.permissions import Capability, role_can
from trial.selectors import has_capability, memberships_of, require_capability, role_for, scope_filter

OPEN = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)


def is_reader(user: Any) -> bool:
    return has_capability(user, Capability.READ_CLINICAL) or has_capability(user, Capability.READ_PANEL)


def _panel_trials(user: Any) -> list[int]:
    return [m.trial_id for m in memberships_of(user) if m.role == Role.BLINDED_READER]


def _workable(user: Any) -> Q:
    """Tasks the user may work on: clinical tasks of their sites (unclaimed
    or theirs), their panel tasks, adjudications they may take."""
    clinical = (
        Q(kind=TaskKind.CLINICAL)
        & scope_filter(user, Capability.READ_CLINICAL)
        & (Q(assignee__isnull=True) | Q(assignee=user))
    )
    panel_trials = _panel_trials(user)
    panel = Q(kind=TaskKind.PANEL, assignee=user, trial_id__in=panel_trials)
    adjudication = Q(kind=TaskKind.ADJUDICATION, trial_id__in=panel_trials) & (
        Q(assignee__isnull=True) | Q(assignee=user)
    )
    return clinical | panel | adjudication


def _in_scope(user: Any) -> Q:
    """Tasks the user could see were they assigned to them: used only to
    answer 403 rather than 404."""
    return (Q(kind=TaskKind.CLINICAL) & scope_filter(user, Capability.READ_CLINICAL)) | Q(
        kind__in=(TaskKind.PANEL, TaskKind.ADJUDICATION), trial_id__in=_panel_trials(user)
    )


def _reader_tasks(user: Any) -> QuerySet[ReadingTask]:
    if not is_reader(user):
        raise PermissionDenied("Your role has no reading tasks.")
    panel_reads = ReadingTask.objects.filter(
        participant_id=OuterRef("participant_id"), kind=TaskKind.PANEL, assignee=user
    )
    return (
        ReadingTask.objects.filter(_workable(user), participant__data_withdrawn=False)
        .exclude(status=TaskStatus.CANCELLED)
        # An adjudicator must not have read the case for the panel.
        .exclude(Q(kind=TaskKind.ADJUDICATION) & Exists(panel_reads))
        .select_related("trial", "site", "participant", "assignee")
    )


@dataclass(frozen=True)
class TaskRow:
    task: ReadingTask
    label: str
    overdue: bool
    phase: str

    @property
    def pk(self) -> int:
        return self.task.pk


@dataclass
class Worklist:
    pending: list[TaskRow] = field(default_factory=list)
    in_progress: list[TaskRow] = field(default_factory=list)
    done: list[TaskRow] = field(default_factory=list)
    upcoming: list[TaskRow] = field(default_factory=list)  # re-reads still in their wash-out

    @property
    def overdue(self) -> int:
        return sum(row.overdue for row in self.pending + self.in_progress)


SECTIONS = ("in_progress", "pending", "upcoming", "done")


@dataclass
class WorklistPage:
    """One page of each section of the worklist: `sections` holds the rows
    from each section's offset, `counts` every task of the section, so that
    the headings and the overdue badge are right whatever page is shown."""

    sections: dict[str, list[TaskRow]]
    counts: dict[str, int]
    overdue: int
    offsets: dict[str, int]


def case_label(task: ReadingTask) -> str:
    """The name a reader sees for a case. Clinical readers see the study id;
    the panel sees a neutral label that never changes and means nothing
    outside the reader's own list (the start of their order key for it)."""
    if task.kind == TaskKind.CLINICAL:
        return task.participant.study_id
    if task.kind == TaskKind.ADJUDICATION:
        return f"Adjudication case {task.pk}"
    return f"Case {task.order_key[:6].upper()}" + (" (re-read)" if task.rereading_of_id else "")


def _worklist_sections(user: Any, now: dt.datetime) -> dict[str, QuerySet[ReadingTask]]:
    """The reader's tasks by section, each in its order: panel tasks first
    in the reader's own random order, then the others by due date; done
    tasks the most recent first. The database orders and cuts, so a page
    costs the same however many tasks the reader has."""
    # A row needs the participant (the clinical label), not the trial, site or assignee.
    tasks = (
        _reader_tasks(user)
        .select_related(None)
        .select_related("participant")
        .annotate(_signed_unaided=Exists(_signed(Phase.UNAIDED)))
    )
    panel_first = Case(When(kind=TaskKind.PANEL, then=Value(0)), default=Value(1), output_field=IntegerField())
    panel_order = Case(When(kind=TaskKind.PANEL, then=F("order_key")), default=Value(""), output_field=CharField())
    order = (panel_first, panel_order, "due_at", "pk")
    ready = Q(available_from__lte=now)
    not_done = ~Q(status=TaskStatus.DONE)
    return {
        "in_progress": tasks.filter(ready, status=TaskStatus.IN_PROGRESS).order_by(*order),
        "pending": tasks.filter(ready, not_done).exclude(status=TaskStatus.IN_PROGRESS).order_by(*order),
        "upcoming": tasks.filter(not_done, available_from__gt=now).order_by(*order),
        # A done task without a completion time counts as done now.
        "done": tasks.filter(status=TaskStatus.DONE).order_by(Coalesce("completed_at", Value(now)).desc(), *order),
    }


def _task_row(task: ReadingTask, now: dt.datetime) -> TaskRow:
    phase = Phase.UNAIDED if task.sequential and not task._signed_unaided else Phase.FINAL  # type: ignore[attr-defined]
    return TaskRow(task, case_label(task), task.is_open and task.due_at < now, phase)


def worklist(user: Any, *, done_limit: int = 200) -> Worklist:
    """The reader's tasks by status, whole (the most recent `done_limit`
    done): panel tasks in the reader's own random order, the others by due
    date. Queries do not grow with the tasks. Pages use worklist_page."""
    now = timezone.now()
    sections = _worklist_sections(user, now)
    return Worklist(
        pending=[_task_row(task, now) for task in sections["pending"]],
        in_progress=[_task_row(task, now) for task in sections["in_progress"]],
        done=[_task_row(task, now) for task in sections["done"][:done_limit]],
        upcoming=[_task_row(task, now) for task in sections["upcoming"]],
    )


def worklist_page(
    user: Any, *, limit: int, offsets: dict[str, int] | None = None, pages: dict[str, int] | None = None
) -> WorklistPage:
    """At most `limit` rows of each section, every section's count and the
    overdue open tasks: six queries however many tasks the reader has.
    Each section starts at its offset in `offsets`, or at the start of its
    page in `pages` (1-based; a page past the last gives the last page);
    0 when not given."""
    now = timezone.now()
    sections = _worklist_sections(user, now)
    totals = _reader_tasks(user).aggregate(
        in_progress=Count("pk", filter=Q(available_from__lte=now, status=TaskStatus.IN_PROGRESS)),
        pending=Count("pk", filter=Q(available_from__lte=now, status=TaskStatus.PENDING)),
        upcoming=Count("pk", filter=Q(available_from__gt=now) & ~Q(status=TaskStatus.DONE)),
        done=Count("pk", filter=Q(status=TaskStatus.DONE)),
        overdue=Count("pk", filter=Q(available_from__lte=now, status__in=OPEN, due_at__lt=now)),
    )
    counts = {name: totals[name] for name in SECTIONS}
    starts = dict(offsets or {})
    for name, number in (pages or {}).items():
        last = max(1, -(-counts[name] // limit)) if limit else 1
        starts[name] = (min(max(number, 1), last) - 1) * limit
    rows = {}
    for name, tasks in sections.items():
        start = max(0, starts.get(name, 0))
        rows[name] = [_task_row(task, now) for task in tasks[start : start + limit]]
    return WorklistPage(sections=rows, counts=counts, overdue=totals["overdue"], offsets=starts)


def _signed(phase: str) -> QuerySet[Read]:
    return Read.objects.filter(task_id=OuterRef("pk"), phase=phase, status=ReadStatus.SIGNED)


def task_get(user: Any, pk: int) -> ReadingTask:
    """A task the user may work on; 403 when it is in their scope but
    another reader's, 404 otherwise."""
    task = _reader_tasks(user).filter(pk=pk).first()
    if task is not None:
        return task
    other = ReadingTask.objects.filter(_in_scope(user), pk=pk, participant__data_withdrawn=False).first()
    if other is not None:
        if other.status == TaskStatus.CANCELLED:
            raise PermissionDenied("This reading task was cancelled: the participant withdrew.")
        raise PermissionDenied("This reading task is assigned to another reader.")
    raise Http404("No such reading task.")


# --- What a case shows -----------------------------------------------------------------


@dataclass(frozen=True)
class CaseImage:
    """An image of a case as a reader receives it: pixels and geometry only
    (no file name, no study or device details)."""

    pk: int
    grey: bool
    rows: int
    columns: int
    frames: int
    key_frame: int
    spacing_mm: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "grey": self.grey,
            "rows": self.rows,
            "columns": self.columns,
            "frames": self.frames,
            "key_frame": self.key_frame,
            "pixel_spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
        }


def case_images(user: Any, task: ReadingTask) -> list[CaseImage]:
    """The usable images of the task's case (the caller read the task
    through task_get)."""
    images = Image.objects.filter(participant_id=task.participant_id, status__in=USABLE).order_by("uploaded_at", "id")
    return [
        CaseImage(
            pk=image.pk,
            grey=image.kind == ImageKind.ULTRASOUND and (image.samples_per_pixel or 1) == 1,
            rows=image.rows or 0,
            columns=image.columns or 0,
            frames=image.frames or 1,
            key_frame=image.key_frame,
            spacing_mm=image.pixel_spacing_mm,
        )
        for image in images
        if image.rows and image.columns and image.file
    ]


def case_image_get(user: Any, task: ReadingTask, image_pk: int) -> Image:
    image = Image.objects.filter(pk=image_pk, participant_id=task.participant_id, status__in=USABLE).first()
    if image is None or not image.file:
        raise Http404("No such image in this case.")
    return image


def own_reads(user: Any, task: ReadingTask) -> list[Read]:
    """The reader's own reads of this task, every version, oldest first.
    Nobody else's read is ever returned to a reader."""
    return list(Read.objects.filter(task=task, reader=user).order_by("phase", "version"))


def read_get(user: Any, task: ReadingTask, pk: int) -> Read:
    read = Read.objects.filter(task=task, reader=user, pk=pk).first()
    if read is None:
        raise Http404("No such read.")
    return read


def own_current_read(user: Any, task: ReadingTask, phase: str) -> Read | None:
    """The reader's current version of one phase of this task (the one a
    page merges with after a conflict), or None before it is opened."""
    return Read.objects.filter(task=task, reader=user, phase=phase, current=True).first()


@dataclass(frozen=True)
class ClinicalDetails:
    """What a clinical reader sees of a clinical task besides the images."""

    study_id: str
    arm: str
    sequential: bool


def clinical_details(user: Any, tasks: list[ReadingTask]) -> dict[int, ClinicalDetails]:
    """Study id, arm label and design of the clinical tasks among `tasks`
    (read through worklist or task_get), keyed by task id, in one query.
    Panel and adjudication tasks get no entry: nothing of the participant
    is shown for them."""
    from randomization.selectors import arm_view

    clinical = [task for task in tasks if task.kind == TaskKind.CLINICAL]
    allocations = {
        allocation.participant_id: allocation
        for allocation in Allocation.objects.filter(participant_id__in=[t.participant_id for t in clinical])
    }
    return {
        task.pk: ClinicalDetails(
            study_id=task.participant.study_id,
            arm=arm_view(user, allocations.get(task.participant_id)).label,
            sequential=task.sequential,
        )
        for task in clinical
    }


def arm_label(user: Any, task: ReadingTask) -> str:
    """The arm as the clinical reader may see it; "" for the panel."""
    if task.kind != TaskKind.CLINICAL:
        return ""
    from randomization.selectors import arm_view

    allocation = Allocation.objects.filter(participant_id=task.participant_id).select_related("trial").first()
    return arm_view(user, allocation).label


# --- The AI second opinion ---------------------------------------------------------------


@dataclass(frozen=True)
class AiOpinion:
    """The AI second opinion of one image, as the reader may see it."""

    result: AiResult
    image_id: int

    def to_dict(self) -> dict[str, Any]:
        result = self.result
        model = result.model_version
        return {
            "id": result.pk,
            "image": self.image_id,
            "status": result.status,
            "reason": result.reason if result.status == AiResultStatus.ABSTAINED else "",
            "category": result.category,
            "category_probability": result.category_probability,
            "category_probabilities": result.category_probabilities,
            "measurements": result.measurements,
            "quality": result.quality,
            "frame": result.frame_index,
            "has_mask": bool(result.mask),
            "has_heatmap": bool(result.probability),
            "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        }


class AiNotYet(PermissionDenied):
    """The AI second opinion exists for this read but is not shown yet."""


def ai_visible(user: Any, task: ReadingTask) -> bool:
    """Whether the AI second opinion may be shown for this task now."""
    try:
        _check_ai(user, task)
    except (PermissionDenied, Http404):
        return False
    return True


def _check_ai(user: Any, task: ReadingTask) -> None:
    if task.kind != TaskKind.CLINICAL or not task.sequential or task.assignee_id != user.pk:
        raise Http404("No such page.")
    if not role_for(user, Capability.READ_CLINICAL, trial_id=task.trial_id, site_id=task.site_id):
        raise Http404("No such page.")
    # The allocation is the authority, not the task's flag alone.
    if not Allocation.objects.filter(participant_id=task.participant_id, arm=Arm.AI_ASSISTED).exists():
        raise Http404("No such page.")
    if current_phase(task) != Phase.FINAL:
        raise AiNotYet("The AI second opinion is shown once your unaided read is signed.")


def ai_second_opinion(user: Any, task: ReadingTask) -> list[AiOpinion]:
    """The finished AI results of the case's images (one per image, the
    latest), for the reader of an AI-arm clinical task whose unaided read is
    signed. Http404 in every other case but one: AiNotYet (403) before the
    unaided read is signed."""
    _check_ai(user, task)
    if task.participant.ai_processing_stopped:
        # The participant withdrew from AI processing: no AI output is used
        # for them any more, not even results made before.
        return []
    results = (
        AiResult.objects.filter(
            image__participant_id=task.participant_id,
            image__status__in=USABLE,
            status__in=(AiResultStatus.DONE, AiResultStatus.ABSTAINED),
        )
        .select_related("model_version")
        .order_by("image_id", "-finished_at", "-pk")
    )
    latest: dict[int, AiOpinion] = {}
    for result in results:
        latest.setdefault(result.image_id, AiOpinion(result, result.image_id))
    return list(latest.values())


def ai_result_for_display(user: Any, task: ReadingTask, result_pk: int) -> AiResult:
    for opinion in ai_second_opinion(user, task):
        if opinion.result.pk == result_pk:
            return opinion.result
    raise Http404("No such AI result in this case.")


# --- Oversight -------------------------------------------------------------------------------


def policy_trial_get(user: Any, pk: int) -> Trial:
    """A trial whose reading policy the user configures: a trial-wide
    CONFIGURE_READINGS membership. 403 without the capability anywhere,
    404 for a trial outside it."""
    require_capability(user, Capability.CONFIGURE_READINGS)
    trial_ids = {
        m.trial_id
        for m in memberships_of(user)
        if role_can(m.role, Capability.CONFIGURE_READINGS) and m.site_id is None
    }
    trial = Trial.objects.filter(pk=pk, id__in=trial_ids).first()
    if trial is None:
        raise Http404("No such trial.")
    return trial


@dataclass(frozen=True)
class Progress:
    site_code: str
    kind: str
    pending: int
    in_progress: int
    done: int
    overdue: int


def tasks_overseen(user: Any, *, status: str = "", kind: str = "") -> QuerySet[ReadingTask]:
    """Tasks at the sites a monitor or trial admin oversees."""
    require_capability(user, Capability.VIEW_READS)
    tasks = ReadingTask.objects.filter(scope_filter(user, Capability.VIEW_READS), participant__data_withdrawn=False)
    if status:
        tasks = tasks.filter(status=status)
    if kind:
        tasks = tasks.filter(kind=kind)
    return tasks.select_related("trial", "site", "participant", "assignee").order_by("due_at", "id")


def reading_progress(user: Any) -> list[Progress]:
    """Counts per site and kind, in one query."""
    require_capability(user, Capability.VIEW_READS)
    now = timezone.now()
    rows = (
        ReadingTask.objects.filter(scope_filter(user, Capability.VIEW_READS), participant__data_withdrawn=False)
        .values("site__code", "kind")
        .annotate(
            pending=Count("id", filter=Q(status=TaskStatus.PENDING)),
            in_progress=Count("id", filter=Q(status=TaskStatus.IN_PROGRESS)),
            done=Count("id", filter=Q(status=TaskStatus.DONE)),
            overdue=Count("id", filter=Q(status__in=OPEN, due_at__lt=now)),
        )
        .order_by("site__code", "kind")
    )
    return [Progress(r["site__code"], r["kind"], r["pending"], r["in_progress"], r["done"], r["overdue"]) for r in rows]


def task_overseen_get(user: Any, pk: int) -> ReadingTask:
    task = tasks_overseen(user).filter(pk=pk).first()
    if task is None:
        raise Http404("No such reading task.")
    return task


def signed_reads(user: Any, task: ReadingTask) -> list[Read]:
    """Every signed version of the task's reads, for oversight."""
    require_capability(user, Capability.VIEW_READS)
    return list(task.reads.filter(status=ReadStatus.SIGNED).select_related("reader").order_by("phase", "version"))


def ai_displays_overseen(user: Any, task: ReadingTask) -> list[tuple[dt.datetime, str, str]]:
    require_capability(user, Capability.VIEW_READS)
    return [
        (d.displayed_at, d.what, d.reader.get_username())
        for d in task.ai_displays.select_related("reader").order_by("displayed_at")
    ]
