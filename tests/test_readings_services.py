"""The rules of readings.services and readings.selectors, at the service
level, on real cases (tests/reading_fixtures.py): tasks made by rule, the
sequential design of the AI-assisted arm, signatures, drafts, corrections,
the panel (selection, per-reader order, re-reads, adjudication), withdrawal,
blinding for every role, and the audit event of every write."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import Http404
from django.utils import timezone
from PIL import Image as PILImage

from imaging import services as imaging_services
from imaging.models import Image, ImageKind, ImageStatus
from randomization.models import Allocation, Arm
from randomization.services import participant_randomize
from readings import selectors, services
from readings.interaction import CATEGORIES, HIGH_GRADE, LOW_GRADE, NORMAL
from readings.models import (
    AdjudicationRule,
    AiDisplay,
    Phase,
    Read,
    ReadingTask,
    ReadStatus,
    TaskKind,
    TaskStatus,
)
from readings.scoring import ReadValidationError
from tests.conftest import PASSWORD, actor_for
from tests.imaging_files import ultrasound_dicom
from tests.reading_fixtures import COLPOSCOPY_READ, THYROID_READ, Case
from trial import selectors as trial_selectors
from trial.audit import verify_chain
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import AuditEvent, Participant, Role, Trial, WithdrawalScope
from trial.services import participant_withdraw

# Thyroid reads of each of the AI's categories (TI-RADS points in the comment).
THYROID_BY_CATEGORY: dict[str, dict[str, Any]] = {
    NORMAL: {**THYROID_READ, "composition": "cystic", "echogenicity": "anechoic"},  # 0: TR1
    LOW_GRADE: {**THYROID_READ, "echogenicity": "hyperechoic_isoechoic"},  # 3: TR3
    HIGH_GRADE: dict(THYROID_READ),  # 4: TR4
}
TR5_READ = {**THYROID_READ, "echogenicity": "very_hypoechoic", "shape": "taller_than_wide"}  # 8: TR5
TR2_READ = {**THYROID_READ, "composition": "mixed_cystic_solid", "echogenicity": "hyperechoic_isoechoic"}  # 2
READING_OBJECT_TYPES = {"readings.readingtask", "readings.read", "readings.aidisplay", "ai_engine.airesult"}

MakeCase = Callable[..., Case]


# --- Helpers ----------------------------------------------------------------------------


def cheap_case(make_case: MakeCase, arm: str = Arm.SPECIALIST_ONLY) -> Case:
    """A thyroid case with one small grey ultrasound image and no AI result."""
    return make_case(arm, images=("grey",), ai=False)


def start(user: Any, task: ReadingTask) -> ReadingTask:
    services.reading_task_start(actor=actor_for(user), task=task)
    return selectors.task_get(user, task.pk)


def open_read(task: ReadingTask, phase: str = Phase.FINAL) -> Read:
    return Read.objects.get(task=task, phase=phase, current=True)


def save(
    user: Any, task: ReadingTask, data: Any, *, phase: str = Phase.FINAL, revision: int | None = None, **extra: Any
) -> Read:
    revision = open_read(task, phase).revision if revision is None else revision
    return services.read_save_draft(
        actor=actor_for(user), task=task, phase=phase, data=data, revision=revision, **extra
    )


def sign(
    user: Any, task: ReadingTask, data: Any, *, phase: str = Phase.FINAL, password: Any = PASSWORD, **extra: Any
) -> Read:
    return services.read_sign(
        actor=actor_for(user),
        task=task,
        phase=phase,
        data=data,
        revision=open_read(task, phase).revision,
        password=password,
        **extra,
    )


def read_task(user: Any, task: ReadingTask, data: dict[str, Any]) -> Read:
    """Start and sign a one-phase task."""
    return sign(user, start(user, task), data)


def correct(user: Any, read: Read, data: Any, reason: str = "Diameter re-measured", **extra: Any) -> Read:
    extra.setdefault("password", PASSWORD)
    return services.read_correct(actor=actor_for(user), read=read, data=data, reason=reason, **extra)


def events(action: str, obj: Any = None) -> list[AuditEvent]:
    queryset = AuditEvent.objects.filter(action=action)
    if obj is not None:
        queryset = queryset.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))
    return list(queryset.order_by("sequence"))


def set_policy(users: dict[str, Any], trial: Trial, **values: Any) -> None:
    services.reading_policy_set(actor=actor_for(users[Role.TRIAL_ADMIN]), trial=trial, **values)


def reader_of(task: ReadingTask, panel: list[Any]) -> Any:
    return next(reader for reader in panel if reader.pk == task.assignee_id)


class Clock:
    """django.utils.timezone with `now` fixed (monkeypatched into a module)."""

    def __init__(self, now: dt.datetime) -> None:
        self._now = now

    def now(self) -> dt.datetime:
        return self._now

    def __getattr__(self, name: str) -> Any:
        return getattr(timezone, name)


def withdraw(coordinator: Any, participant: Participant, scope: str) -> None:
    participant_withdraw(
        actor=actor_for(coordinator),
        participant=participant,
        withdrawn_on=timezone.localdate(),
        scope=scope,
        reason="Participant asked to leave the study",
    )


@pytest.fixture
def clinician(users: dict[str, Any]) -> Any:
    return users[Role.CLINICIAN_READER]


@pytest.fixture
def upload_grey(coordinator: Any, django_capture_on_commit_callbacks: Any) -> Callable[[Participant], Image]:
    """Upload a new small grey ultrasound for a participant, running the
    accepted-image signal as a commit would."""

    def upload(participant: Participant) -> Image:
        with django_capture_on_commit_callbacks(execute=True):
            outcome = imaging_services.image_upload(
                actor=actor_for(coordinator),
                participant=participant,
                name="grey.dcm",
                data=ultrasound_dicom(rows=96, columns=128, monochrome_bits=8),
            )
        assert outcome.status == "accepted" and outcome.image is not None, outcome.reason
        return outcome.image

    return upload


# --- Tasks made by rule ------------------------------------------------------------------


def test_image_after_randomization_makes_one_clinical_task_in_either_arm(
    block_scheme: Any, coordinator: Any, enroll: Callable[..., Participant], upload_grey: Any
) -> None:
    arms_seen: set[str] = set()
    for _ in range(12):
        participant = enroll(indication="thyroid")
        assert not ReadingTask.objects.filter(participant=participant).exists()
        participant_randomize(actor=actor_for(coordinator), participant=participant)
        arm = Allocation.objects.get(participant=participant).arm
        # Randomized, but no accepted image yet: nothing to read.
        assert not ReadingTask.objects.filter(participant=participant).exists()
        before = timezone.now()
        upload_grey(participant)
        task = ReadingTask.objects.get(participant=participant, kind=TaskKind.CLINICAL)
        assert task.sequential is (arm == Arm.AI_ASSISTED)
        assert (task.site, task.trial, task.form, task.status) == (
            participant.site,
            participant.trial,
            "thyroid",
            TaskStatus.PENDING,
        )
        assert task.assignee is None  # open to every clinician reader of the site
        assert before <= task.available_from <= timezone.now()
        assert task.due_at == task.available_from + dt.timedelta(days=7)
        tasks_before = set(ReadingTask.objects.filter(participant=participant).values_list("pk", flat=True))
        # A second image makes no second task, nor does asking again.
        upload_grey(participant)
        assert services.reading_tasks_ensure(participant_id=participant.pk) == []
        tasks = ReadingTask.objects.filter(participant=participant)
        assert set(tasks.values_list("pk", flat=True)) == tasks_before
        assert tasks.filter(kind=TaskKind.CLINICAL).count() == 1
        for made in tasks:
            (event,) = events("reading_task.create", made)
            assert event.screening_id == participant.screening_id and event.actor_username == "system:reading-rules"
        arms_seen.add(arm)
        if arms_seen == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}:
            break
    assert arms_seen == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}
    assert verify_chain().ok


def test_randomization_after_an_accepted_image_makes_the_task(
    block_scheme: Any, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    """image_upload refuses a participant who is not randomized, so this
    order arises only from an image row written before randomization (as an
    import would): the randomization signal then makes the task, in the
    allocation's transaction."""
    refused = imaging_services.image_upload(
        actor=actor_for(coordinator),
        participant=enroll(indication="thyroid"),
        name="grey.dcm",
        data=ultrasound_dicom(rows=96, columns=128, monochrome_bits=8),
    )
    assert refused.status == "rejected" and "not randomized" in refused.reason
    arms_seen: set[str] = set()
    for number in range(12):
        participant = enroll(indication="thyroid")
        Image.objects.create(
            participant=participant,
            trial=participant.trial,
            site=participant.site,
            status=ImageStatus.NEEDS_REVIEW if number % 2 else ImageStatus.ACCEPTED,
            source_sha256=f"{number:064d}",
            kind=ImageKind.ULTRASOUND,
            rows=96,
            columns=128,
            frames=1,
            uploaded_by=coordinator,
        )
        assert services.reading_tasks_ensure(participant_id=participant.pk) == []  # not randomized
        participant_randomize(actor=actor_for(coordinator), participant=participant)
        arm = Allocation.objects.get(participant=participant).arm
        (task,) = ReadingTask.objects.filter(participant=participant, kind=TaskKind.CLINICAL)
        assert task.sequential is (arm == Arm.AI_ASSISTED)
        arms_seen.add(arm)
        if len(arms_seen) == 2:
            break
    assert arms_seen == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}


def test_a_missed_image_signal_is_made_good_by_asking_again(
    block_scheme: Any, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    participant = enroll(indication="thyroid")
    participant_randomize(actor=actor_for(coordinator), participant=participant)
    # The test's transaction never commits: the accepted-image signal does not run.
    imaging_services.image_upload(
        actor=actor_for(coordinator),
        participant=participant,
        name="grey.dcm",
        data=ultrasound_dicom(rows=96, columns=128, monochrome_bits=8),
    )
    assert not ReadingTask.objects.filter(participant=participant).exists()
    made = services.reading_tasks_ensure(participant_id=participant.pk)
    assert [task.kind for task in made] == [TaskKind.CLINICAL, TaskKind.PANEL]  # the users fixture's one reader
    assert services.reading_tasks_ensure(participant_id=participant.pk) == []


def test_panel_fraction_zero_makes_no_panel_task(
    make_case: MakeCase, panel: list[Any], recruiting: Trial, users: dict[str, Any]
) -> None:
    set_policy(users, recruiting, panel_fraction=0.0)
    (event,) = events("reading_policy.change")
    assert event.before["panel_fraction"] == 1.0 and event.after["panel_fraction"] == 0.0
    assert event.actor_username == users[Role.TRIAL_ADMIN].username
    case = cheap_case(make_case)
    assert len(case.tasks(TaskKind.CLINICAL)) == 1
    assert case.tasks(TaskKind.PANEL) == []


@pytest.mark.parametrize(("per_case", "expected"), [(3, 3), (2, 2), (5, 3)])
def test_panel_fraction_one_gives_each_case_its_readers(
    make_case: MakeCase,
    panel: list[Any],
    recruiting: Trial,
    users: dict[str, Any],
    per_case: int,
    expected: int,
) -> None:
    set_policy(users, recruiting, panel_readers_per_case=per_case, panel_due_days=30)
    case = cheap_case(make_case)
    tasks = case.tasks(TaskKind.PANEL)
    assert len(tasks) == expected
    assert len({task.assignee_id for task in tasks}) == expected
    assert {task.assignee_id for task in tasks} <= {reader.pk for reader in panel}
    for task in tasks:
        assert task.status == TaskStatus.PENDING and task.rereading_of is None and not task.sequential
        assert task.due_at == task.available_from + dt.timedelta(days=30)
        assert len(task.order_key) == 64


def test_policy_is_changed_by_the_trial_admin_only_with_valid_values(recruiting: Trial, users: dict[str, Any]) -> None:
    for role in set(Role.values) - {Role.TRIAL_ADMIN}:
        with pytest.raises(NotAllowed):
            services.reading_policy_set(actor=actor_for(users[role]), trial=recruiting, panel_fraction=0.5)
    refusals = {
        "panel_fraction": (1.5, "must be a number from 0 to 1"),
        "panel_readers_per_case": (0, "from 1 to 10"),
        "washout_days": (True, "whole number from 0 to 365"),
        "adjudication_rule": ("majority", "Unknown adjudication rule 'majority'"),
    }
    for name, (value, message) in refusals.items():
        with pytest.raises(RuleViolation, match=message) as refused:
            set_policy(users, recruiting, **{name: value})
        assert refused.value.field == name
    with pytest.raises(RuleViolation, match="Unknown reading policy settings: seed"):
        set_policy(users, recruiting, seed="guessable")
    with pytest.raises(RuleViolation, match="Nothing to change"):
        set_policy(users, recruiting, panel_fraction=1.0)
    assert events("reading_policy.change") == []
    policy = services.reading_policy_for(recruiting)
    assert (policy.panel_fraction, policy.panel_readers_per_case, policy.adjudication_rule) == (
        1.0,
        2,
        AdjudicationRule.HIGH_GRADE,
    )
    assert len(policy.seed) == 64
    assert len(events("reading_policy.create", policy)) == 1


def test_panel_selection_is_keyed_by_the_seed_and_near_the_fraction(
    make_case: MakeCase, panel: list[Any], recruiting: Trial, users: dict[str, Any]
) -> None:
    set_policy(users, recruiting, panel_fraction=0.5, panel_readers_per_case=1)
    seed = services.reading_policy_for(recruiting).seed
    cases = [cheap_case(make_case, arm) for arm in [Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY] * 20]
    picked = {case.participant.pk for case in cases if case.tasks(TaskKind.PANEL)}
    # The choice is the keyed hash of the trial's secret seed and the case:
    # anyone holding the seed picks the same cases again; another seed
    # picks others.
    again = {
        case.participant.pk for case in cases if services._keyed_fraction(seed, "panel", case.participant.pk) < 0.5
    }
    assert picked == again
    other = {
        case.participant.pk
        for case in cases
        if services._keyed_fraction("x" + seed, "panel", case.participant.pk) < 0.5
    }
    assert other != picked
    # Binomial(40, 0.5): outside 8–32 with probability below 1e-4.
    assert 8 <= len(picked) <= 32
    # The reader of each picked case is keyed the same way, so the work
    # spreads over the panel.
    assigned = {}
    for case in cases:
        assert len(case.tasks(TaskKind.CLINICAL)) == 1
        assert len(case.tasks(TaskKind.PANEL)) == (1 if case.participant.pk in picked else 0)
        if case.participant.pk in picked:
            pk = case.participant.pk
            assigned[pk] = case.task(TaskKind.PANEL).assignee_id
            assert assigned[pk] == min(panel, key=lambda u, pk=pk: services._keyed_hash(seed, "assign", pk, u.pk)).pk
    assert len(set(assigned.values())) > 1


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.75])
def test_keyed_fraction_is_uniform_over_many_cases(fraction: float) -> None:
    """The selection rule over 4000 cases, without a database."""
    picked = sum(services._keyed_fraction("a fixed seed", "panel", pk) < fraction for pk in range(1, 4001))
    assert abs(picked / 4000 - fraction) < 0.03


def test_each_panel_reader_has_their_own_reproducible_case_order(
    make_case: MakeCase, panel: list[Any], recruiting: Trial, users: dict[str, Any]
) -> None:
    set_policy(users, recruiting, panel_readers_per_case=3)
    cases = [cheap_case(make_case, arm) for arm in [Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY] * 4]
    seed = services.reading_policy_for(recruiting).seed
    orders = []
    for reader in panel:
        rows = selectors.worklist(reader).pending
        order = [row.task.participant_id for row in rows]
        assert sorted(order) == sorted(case.participant.pk for case in cases)  # a permutation of the cases
        # Neutral labels, distinct, from the reader's own order keys.
        assert [row.label for row in rows] == [f"Case {row.task.order_key[:6].upper()}" for row in rows]
        assert len({row.label for row in rows}) == len(rows)
        assert all(row.task.kind == TaskKind.PANEL and row.task.assignee_id == reader.pk for row in rows)
        assert [row.task.participant_id for row in selectors.worklist(reader).pending] == order  # reproducible
        # Reproducible from the seed alone.
        assert order == sorted(order, key=lambda pk, r=reader: services._keyed_hash(seed, "order", r.pk, pk))
        for row in rows:
            assert selectors.case_label(row.task) == row.label
            assert row.task.participant.study_id not in row.label
        orders.append(order)
    assert len({tuple(order) for order in orders}) > 1  # readers' orders differ
    assert any(order != sorted(order) for order in orders)  # not the order of enrollment


# --- The sequential design, the AI second opinion and the interaction record ----------------------


def test_sequential_read_shows_the_ai_after_the_unaided_read_and_records_the_interaction(
    ai_case: Case, clinician: Any, users: dict[str, Any], make_user: Callable[..., Any], recruiting: Trial, site_a: Any
) -> None:
    (result,) = ai_case.ai_results
    assert result.category in CATEGORIES, "the shipped model should judge this image"
    task = ai_case.task()
    assert task.sequential
    # Not started: the AI does not exist for anyone.
    with pytest.raises(Http404):
        selectors.ai_second_opinion(clinician, task)
    task = start(clinician, task)
    assert services.current_phase(task) == Phase.UNAIDED
    assert selectors.worklist(clinician).in_progress[0].phase == Phase.UNAIDED
    with pytest.raises(selectors.AiNotYet):
        selectors.ai_second_opinion(clinician, task)
    assert selectors.ai_visible(clinician, task) is False
    with pytest.raises(NotAllowed, match="once the unaided read is signed"):
        services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=result, what="suggestion")
    assert not AiDisplay.objects.exists()
    with pytest.raises(Conflict, match="final read is not open"):
        save(clinician, task, THYROID_READ, phase=Phase.FINAL, revision=0)

    unaided_data = THYROID_BY_CATEGORY[next(c for c in CATEGORIES if c != result.category)]
    final_data = {**THYROID_BY_CATEGORY[result.category], "confidence": 5}
    save(clinician, task, {"composition": unaided_data["composition"]}, phase=Phase.UNAIDED)
    unaided = sign(clinician, task, unaided_data, phase=Phase.UNAIDED)
    assert unaided.status == ReadStatus.SIGNED
    assert unaided.signature_meaning == services.SIGNATURE_MEANINGS[(TaskKind.CLINICAL, Phase.UNAIDED)]
    task = selectors.task_get(clinician, task.pk)
    assert task.status == TaskStatus.IN_PROGRESS and services.current_phase(task) == Phase.FINAL
    final = open_read(task, Phase.FINAL)
    assert final.status == ReadStatus.DRAFT and final.data == unaided_data  # the final read starts from the unaided one
    with pytest.raises(Conflict, match="The unaided read is not open now"):
        save(clinician, task, unaided_data, phase=Phase.UNAIDED)

    # Now the AI second opinion is shown, and each display recorded.
    opinions = selectors.ai_second_opinion(clinician, task)
    assert [opinion.result.pk for opinion in opinions] == [result.pk]
    assert opinions[0].to_dict()["category"] == result.category
    for what in ("suggestion", "contour", "contour"):
        services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=result, what=what)
    displays = list(AiDisplay.objects.filter(task=task))
    assert [d.what for d in displays] == ["suggestion", "contour", "contour"]
    assert [e.object_id for e in events("ai_result.display")] == [str(d.pk) for d in displays]
    # Another clinician of the site never gets it.
    other = make_user("clinician-2", Role.CLINICIAN_READER, trial=recruiting, site=site_a)
    with pytest.raises(Http404):
        selectors.ai_second_opinion(other, task)
    with pytest.raises(PermissionDenied):
        selectors.task_get(other, task.pk)
    # The unaided read is locked for good once the AI was shown.
    with pytest.raises(RuleViolation, match="AI second opinion has been shown"):
        correct(clinician, unaided, THYROID_BY_CATEGORY[result.category])
    assert Read.objects.filter(task=task, phase=Phase.UNAIDED).count() == 1

    final = sign(clinician, task, final_data)
    final.refresh_from_db()
    task = selectors.task_get(clinician, task.pk)
    assert task.status == TaskStatus.DONE and task.completed_at == final.signed_at
    record = final.interaction
    assert record["ai_viewed"] is True
    assert record["ai_first_viewed_at"] == displays[0].displayed_at.isoformat()
    assert (record["ai_displays"], record["ai_displayed"]) == (3, ["contour", "suggestion"])
    assert (record["ai_result"], record["ai_status"], record["ai_category"]) == (
        result.pk,
        result.status,
        result.category,
    )
    assert record["ai_probability"] == pytest.approx(result.category_probability)
    unaided.refresh_from_db()
    assert record["seconds_to_unaided_decision"] == round((unaided.signed_at - unaided.opened_at).total_seconds(), 1)
    assert record["seconds_to_final_decision"] == round((final.signed_at - displays[0].displayed_at).total_seconds(), 1)
    assert record["changed_fields"]["confidence"] == [4, 5]
    for name in ("composition", "echogenicity", "category", "points"):
        if unaided.values[name] != final.values[name]:
            assert record["changed_fields"][name] == [unaided.values[name], final.values[name]]
    assert "category" in record["changed_fields"]
    assert record["category_final"] == result.category != record["category_unaided"]
    assert (record["agreed_with_ai_unaided"], record["agreed_with_ai_final"]) == (False, True)
    assert record["category_change"] == "towards_ai"
    assert unaided.interaction == {}
    # Every write of the read left its event; the chain holds.
    (start_event,) = events("reading_task.start", task)
    assert start_event.actor_username == clinician.username and start_event.role == Role.CLINICIAN_READER
    assert [e.after["phase"] for e in events("read.save_draft")] == [Phase.UNAIDED]
    assert [e.object_id for e in events("read.sign")] == [str(unaided.pk), str(final.pk)]
    assert verify_chain().ok


def test_a_display_record_names_a_shown_result_of_this_case(
    ai_case: Case, make_case: MakeCase, clinician: Any, coordinator: Any
) -> None:
    other = make_case(Arm.SPECIALIST_ONLY, images=("palette",))
    task = start(clinician, ai_case.task())
    sign(clinician, task, THYROID_READ, phase=Phase.UNAIDED)
    with pytest.raises(NotAllowed, match="not one of this case's"):
        services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=other.ai_results[0], what="contour")
    with pytest.raises(RuleViolation, match="Unknown AI display 'banner'"):
        services.ai_display_record(
            actor=actor_for(clinician), task=task, ai_result=ai_case.ai_results[0], what="banner"
        )
    withdraw(coordinator, ai_case.participant, WithdrawalScope.STOP_FOLLOW_UP)
    with pytest.raises(RuleViolation, match="cancelled"):
        services.ai_display_record(
            actor=actor_for(clinician), task=task, ai_result=ai_case.ai_results[0], what="suggestion"
        )
    assert not AiDisplay.objects.exists() and events("ai_result.display") == []


def test_a_final_read_that_never_viewed_the_ai_says_so(make_case: MakeCase, clinician: Any) -> None:
    case = cheap_case(make_case, Arm.AI_ASSISTED)  # its AI has not judged it yet
    task = start(clinician, case.task())
    sign(clinician, task, THYROID_READ, phase=Phase.UNAIDED)
    assert selectors.ai_second_opinion(clinician, task) == []
    final = sign(clinician, task, THYROID_READ)
    record = final.interaction
    assert record["ai_viewed"] is False and record["ai_first_viewed_at"] is None
    assert (record["ai_displays"], record["ai_displayed"]) == (0, [])
    assert (record["ai_result"], record["ai_category"], record["ai_status"]) == (None, None, None)
    assert record["changed_fields"] == {}
    assert record["category_unaided"] == record["category_final"] == HIGH_GRADE
    assert record["category_change"] == "unchanged"
    assert record["agreed_with_ai_final"] is None
    assert record["seconds_to_final_decision"] == round((final.signed_at - final.opened_at).total_seconds(), 1)


def test_no_ai_in_the_specialist_arm_or_for_the_panel(
    specialist_case: Case, clinician: Any, users: dict[str, Any]
) -> None:
    assert specialist_case.ai_results, "the AI ran in shadow mode"
    result = specialist_case.ai_results[0]
    task = specialist_case.task()
    assert not task.sequential
    task = start(clinician, task)
    assert services.current_phase(task) == Phase.FINAL
    assert not Read.objects.filter(task=task, phase=Phase.UNAIDED).exists()
    with pytest.raises(Http404):
        selectors.ai_second_opinion(clinician, task)
    with pytest.raises(NotAllowed, match="not shown for this read"):
        services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=result, what="contour")
    final = sign(clinician, task, THYROID_READ)
    assert final.signature_meaning == services.SIGNATURE_MEANINGS[(TaskKind.CLINICAL, Phase.FINAL)]
    assert final.interaction == {}
    with pytest.raises(Http404):  # not after signing either
        selectors.ai_second_opinion(clinician, selectors.task_get(clinician, task.pk))
    assert selectors.ai_visible(clinician, task) is False

    reader = users[Role.BLINDED_READER]
    (panel_task,) = specialist_case.tasks(TaskKind.PANEL)
    panel_task = start(reader, panel_task)
    with pytest.raises(Http404):
        selectors.ai_second_opinion(reader, panel_task)
    with pytest.raises(NotAllowed):
        services.ai_display_record(actor=actor_for(reader), task=panel_task, ai_result=result, what="contour")
    assert selectors.arm_label(reader, panel_task) == ""
    assert not AiDisplay.objects.exists() and events("ai_result.display") == []


# --- Signing ------------------------------------------------------------------------------------------


def test_a_wrong_password_signs_nothing(make_case: MakeCase, clinician: Any) -> None:
    task = start(clinician, cheap_case(make_case).task())
    draft = save(clinician, task, {"composition": "solid"})
    for password in ("not-my-password", "", None):
        with pytest.raises(RuleViolation, match="password is not correct") as refused:
            sign(clinician, task, THYROID_READ, password=password)
        assert refused.value.field == "password"
    read = open_read(task)
    assert (read.status, read.revision, read.data, read.signed_at) == (ReadStatus.DRAFT, 1, draft.data, None)
    assert events("read.sign") == []
    # Each refused attempt stays in the audit trail (21 CFR 11.300(d)).
    refusals = events("read.sign_refused")
    assert len(refusals) == 3
    assert all(e.actor_username == clinician.username and e.object_id == str(task.pk) for e in refusals)
    assert selectors.task_get(clinician, task.pk).status == TaskStatus.IN_PROGRESS


def test_an_invalid_read_is_refused_with_every_error_at_once(make_case: MakeCase, clinician: Any) -> None:
    thyroid_task = start(clinician, cheap_case(make_case).task())
    bad_thyroid = {**THYROID_READ, "tirads_category": "TR2", "largest_diameter_mm": -3, "confidence": 9}
    with pytest.raises(ReadValidationError) as refused:
        sign(clinician, thyroid_task, bad_thyroid)
    errors = refused.value.errors
    assert set(errors) == {"tirads_category", "largest_diameter_mm", "confidence"}
    assert "TR2 was entered but the features add up to 4 points, which is TR4" in errors["tirads_category"]

    cervical = make_case(Arm.AI_ASSISTED, indication="cervical", ai=False)
    cervical_task = start(clinician, cervical.task())
    assert cervical_task.form == "colposcopy"
    bad_colposcopy = {**COLPOSCOPY_READ, "swede_vessels": 3, "confidence": 0, "figo_stage": "IB1"}
    with pytest.raises(ReadValidationError) as refused:
        sign(clinician, cervical_task, bad_colposcopy, phase=Phase.UNAIDED)
    errors = refused.value.errors
    assert set(errors) == {"swede_vessels", "confidence", "figo_stage"}
    assert "only when the impression is suspicious for invasion" in errors["figo_stage"]
    for task, phase in ((thyroid_task, Phase.FINAL), (cervical_task, Phase.UNAIDED)):
        read = open_read(task, phase)
        assert (read.status, read.revision, read.values) == (ReadStatus.DRAFT, 0, {})
    assert events("read.sign") == []


def test_the_signature_and_the_outline_mask_are_stored(make_case: MakeCase, clinician: Any) -> None:
    clinician.first_name, clinician.last_name = "Ada", "Lovelace"
    clinician.save()
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)  # pydicom's 30-frame cine, 240 × 320
    (image,) = case.images
    assert (image.rows, image.columns, image.frames) == (240, 320, 30)
    task = start(clinician, case.task())
    outline = {"image": image.pk, "frame": 12, "points": [[10, 20], [60, 20], [60.0, 50], [10, 50]]}
    before = timezone.now()
    read = sign(clinician, task, THYROID_READ, outline=outline)
    read.refresh_from_db()
    assert read.status == ReadStatus.SIGNED and read.current and read.version == 1
    assert read.signer_name == "Ada Lovelace"
    assert before <= read.signed_at <= timezone.now()
    assert read.signature_meaning == services.SIGNATURE_MEANINGS[(TaskKind.CLINICAL, Phase.FINAL)]
    assert read.values["category"] == "TR4" and read.values["fna"] == "fna"
    assert read.outline == {"image": image.pk, "frame": 12, "points": [[10, 20], [60, 20], [60, 50], [10, 50]]}
    # The mask read back from storage: exactly the polygon's pixels.
    with default_storage.open(read.outline_mask.name, "rb") as handle:
        stored = handle.read()
    assert hashlib.sha256(stored).hexdigest() == read.outline_mask_sha256
    mask = PILImage.open(io.BytesIO(stored))
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (320, 240))
    pixels = np.asarray(mask)
    expected = np.zeros((240, 320), dtype=np.uint8)
    expected[20:51, 10:61] = 255
    assert np.array_equal(pixels, expected)
    (event,) = events("read.sign", read)
    assert event.after["signer_name"] == "Ada Lovelace"
    assert event.after["signature_meaning"] == read.signature_meaning
    assert event.after["outline_mask_sha256"] == read.outline_mask_sha256
    assert event.after["values"]["category"] == "TR4"
    assert event.actor_username == clinician.username
    # Signed: the task is done and the read cannot be saved or signed again.
    task = selectors.task_get(clinician, task.pk)
    assert task.status == TaskStatus.DONE
    with pytest.raises(Conflict, match="task is finished"):
        save(clinician, task, THYROID_READ)
    with pytest.raises(Conflict, match="task is finished"):
        sign(clinician, task, THYROID_READ)


def test_a_triangle_outline_fills_the_triangle(make_case: MakeCase, users: dict[str, Any]) -> None:
    reader = users[Role.BLINDED_READER]
    case = cheap_case(make_case)  # 96 × 128
    (image,) = case.images
    task = start(reader, case.task(TaskKind.PANEL))
    read = sign(reader, task, THYROID_READ, outline={"image": image.pk, "points": [[10, 10], [110, 10], [10, 80]]})
    with default_storage.open(read.outline_mask.name, "rb") as handle:
        pixels = np.asarray(PILImage.open(handle))
    assert pixels.shape == (96, 128) and set(np.unique(pixels)) == {0, 255}
    ys, xs = np.mgrid[0:96, 0:128]
    # Inside: x ≥ 10, y ≥ 10 and below the hypotenuse 7x + 10y = 870 (a pixel's margin either side).
    surely_inside = (xs >= 11) & (ys >= 11) & (7 * xs + 10 * ys <= 870 - 13)
    surely_outside = (xs <= 8) | (ys <= 8) | (7 * xs + 10 * ys >= 870 + 13)
    assert (pixels[surely_inside] == 255).all()
    assert (pixels[surely_outside] == 0).all()
    assert read.signature_meaning == services.SIGNATURE_MEANINGS[(TaskKind.PANEL, Phase.FINAL)]


# --- Drafts ---------------------------------------------------------------------------------------------


def test_two_saves_from_the_same_revision_conflict_and_the_first_is_kept(make_case: MakeCase, clinician: Any) -> None:
    task = start(clinician, cheap_case(make_case).task())
    assert open_read(task).revision == 0
    first = save(clinician, task, {"composition": "solid", "note": "first tab"}, revision=0)
    assert first.revision == 1 and first.saved_at is not None
    with pytest.raises(Conflict, match="saved elsewhere"):
        save(clinician, task, {"composition": "cystic", "note": "second tab"}, revision=0)
    read = open_read(task)
    assert (read.revision, read.data) == (1, {"composition": "solid", "note": "first tab"})
    (event,) = events("read.save_draft")
    assert event.after == {"phase": Phase.FINAL, "revision": 1, "changed": ["composition", "note"]}
    # The second tab reloads (revision 1) and saves.
    second = save(clinician, task, {"composition": "cystic", "note": "first tab"}, revision=1)
    assert second.revision == 2
    assert events("read.save_draft")[-1].after["changed"] == ["composition"]


def test_a_bad_outline_is_refused_and_nothing_changes(make_case: MakeCase, clinician: Any) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)  # 240 × 320, 30 frames
    other = cheap_case(make_case, Arm.AI_ASSISTED)
    (image,) = case.images
    task = start(clinician, case.task())
    good = {"image": image.pk, "frame": 0, "points": [[1, 1], [5, 1], [5, 5]]}
    save(clinician, task, {"composition": "solid"}, outline=good)
    bad = {
        "lies outside the image (320 × 240 pixels)": {**good, "points": [[1, 1], [400, 1], [5, 5]]},
        "names an image that is not part of this case": {**good, "image": other.images[0].pk},
        "needs from 3 to 2000 points": {**good, "points": [[1, 1], [5, 5]]},
        "frame must be from 0 to 29": {**good, "frame": 30},
        "pair of numbers": {**good, "points": [[1, 1], [5, "x"], [5, 5]]},
        "must be an object": [[1, 1], [5, 1], [5, 5]],
    }
    for message, outline in bad.items():
        for write in (save, sign):
            with pytest.raises(RuleViolation, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
                write(clinician, task, THYROID_READ, outline=outline)
            assert refused.value.field == "outline"
    read = open_read(task)
    assert (read.revision, read.data, read.status) == (1, {"composition": "solid"}, ReadStatus.DRAFT)
    assert read.outline == {"image": image.pk, "frame": 0, "points": [[1, 1], [5, 1], [5, 5]]}
    assert len(events("read.save_draft")) == 1 and events("read.sign") == []


def test_an_oversized_or_shapeless_draft_is_refused(make_case: MakeCase, clinician: Any) -> None:
    task = start(clinician, cheap_case(make_case).task())
    with pytest.raises(RuleViolation, match=r"too large \(\d+ bytes; at most 65536\)") as refused:
        save(clinician, task, {"note": "x" * 70_000})
    assert refused.value.field == "data"
    with pytest.raises(RuleViolation, match="set of named fields"):
        save(clinician, task, ["composition", "solid"])
    with pytest.raises(RuleViolation, match="Unknown phase 'review'; it is unaided or final"):
        save(clinician, task, {}, phase="review", revision=0)
    with pytest.raises(RuleViolation, match="Unknown phase 'review'") as refused:
        services.read_sign(
            actor=actor_for(clinician), task=task, phase="review", data=THYROID_READ, revision=0, password=PASSWORD
        )
    assert refused.value.field == "phase"
    read = open_read(task)
    assert (read.revision, read.data) == (0, {})
    assert events("read.save_draft") == []


def test_only_the_reader_of_a_started_task_works_on_it(
    make_case: MakeCase, clinician: Any, recruiting: Trial, site_a: Any, make_user: Callable[..., Any]
) -> None:
    task = cheap_case(make_case).task()
    colleague = make_user("clinician-2", Role.CLINICIAN_READER, trial=recruiting, site=site_a)
    with pytest.raises(RuleViolation, match="start the task first"):
        save(colleague, task, THYROID_READ, revision=0)
    assert start(clinician, task).assignee == clinician
    assert start(clinician, task).status == TaskStatus.IN_PROGRESS  # starting again changes nothing
    assert len(events("reading_task.start", task)) == 1
    for attempt in (
        lambda: services.reading_task_start(actor=actor_for(colleague), task=task),
        lambda: save(colleague, task, THYROID_READ),
        lambda: sign(colleague, task, THYROID_READ),
    ):
        with pytest.raises(NotAllowed, match="assigned to another reader"):
            attempt()
    assert selectors.worklist(colleague).pending == []
    assert open_read(task).revision == 0


# --- Corrections ------------------------------------------------------------------------------------------


def test_a_correction_is_a_new_signed_version_with_its_reason(
    make_case: MakeCase,
    clinician: Any,
    users: dict[str, Any],
    recruiting: Trial,
    site_a: Any,
    make_user: Callable[..., Any],
) -> None:
    monitor = users[Role.MONITOR]
    task = cheap_case(make_case).task()
    first = read_task(clinician, task, THYROID_READ)
    first.refresh_from_db()
    first_values = dict(first.values)
    changed = {**THYROID_READ, "largest_diameter_mm": 12}
    for reason in ("", "   "):
        with pytest.raises(RuleViolation, match="A reason is required to correct a signed read") as refused:
            correct(clinician, first, changed, reason=reason)
        assert refused.value.field == "reason"
    colleague = make_user("clinician-2", Role.CLINICIAN_READER, trial=recruiting, site=site_a)
    with pytest.raises(NotAllowed):
        correct(colleague, first, changed)
    with pytest.raises(NotAllowed):
        correct(make_user("reader-x", Role.BLINDED_READER, trial=recruiting), first, changed)
    with pytest.raises(RuleViolation, match="Nothing to correct"):
        correct(clinician, first, THYROID_READ)
    with pytest.raises(RuleViolation, match="password is not correct"):
        correct(clinician, first, changed, password="guess")
    with pytest.raises(ReadValidationError) as invalid:
        correct(clinician, first, {**THYROID_READ, "confidence": 6})
    assert set(invalid.value.errors) == {"confidence"}
    assert Read.objects.filter(task=task).count() == 1 and events("read.correct") == []

    second = correct(clinician, first, changed)
    first.refresh_from_db()
    assert (first.version, first.current, first.status, first.values) == (1, False, ReadStatus.SIGNED, first_values)
    assert (second.version, second.current, second.status) == (2, True, ReadStatus.SIGNED)
    assert second.supersedes == first and second.correction_reason == "Diameter re-measured"
    assert second.values["largest_diameter_mm"] == 12 and second.values["fna"] == "follow-up"
    assert second.signature_meaning == services.CORRECTION_MEANING
    assert second.signer_name == clinician.username
    assert open_read(task) == second
    (event,) = events("read.correct", second)
    assert event.reason == "Diameter re-measured"
    assert (event.before["version"], event.after["version"]) == (1, 2)
    assert event.before["values"] == first_values and event.after["values"]["largest_diameter_mm"] == 12
    # Correcting the old version again is a conflict; the current one can be corrected.
    with pytest.raises(Conflict, match="already been corrected"):
        correct(clinician, first, {**THYROID_READ, "largest_diameter_mm": 13})
    third = correct(clinician, second, {**THYROID_READ, "largest_diameter_mm": 13}, reason="Typo")
    assert third.version == 3 and third.supersedes == second
    assert list(Read.objects.filter(task=task, current=True)) == [third]
    # Every version stays visible to oversight.
    versions = selectors.signed_reads(monitor, task)
    assert [read.version for read in versions] == [1, 2, 3]
    assert verify_chain().ok


def test_a_draft_cannot_be_corrected_and_an_unaided_read_can_before_the_ai(make_case: MakeCase, clinician: Any) -> None:
    task = start(clinician, cheap_case(make_case, Arm.AI_ASSISTED).task())
    draft = open_read(task, Phase.UNAIDED)
    with pytest.raises(RuleViolation, match="This read is a draft"):
        correct(clinician, draft, THYROID_READ)
    unaided = sign(clinician, task, THYROID_READ, phase=Phase.UNAIDED)
    # No AI shown yet: the unaided read may still be corrected, and stays the unaided read.
    corrected = correct(clinician, unaided, {**THYROID_READ, "confidence": 2}, reason="Wrong confidence ticked")
    assert (corrected.phase, corrected.version) == (Phase.UNAIDED, 2)
    final = sign(clinician, selectors.task_get(clinician, task.pk), THYROID_READ)
    assert final.interaction["changed_fields"] == {"confidence": [2, 4]}  # compared with the current version


# --- The panel: re-reads and adjudication --------------------------------------------------------------------


def test_a_reread_opens_after_the_washout(
    make_case: MakeCase,
    panel: list[Any],
    recruiting: Trial,
    users: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_policy(users, recruiting, reread_fraction=1.0, washout_days=14, panel_readers_per_case=1)
    case = cheap_case(make_case)
    (task,) = case.tasks(TaskKind.PANEL)
    reader = reader_of(task, panel)
    read_task(reader, task, THYROID_READ)
    first, reread = case.tasks(TaskKind.PANEL)
    assert first.pk == task.pk and first.status == TaskStatus.DONE
    assert (reread.rereading_of_id, reread.assignee_id, reread.status) == (task.pk, reader.pk, TaskStatus.PENDING)
    assert dt.timedelta(days=14) <= reread.available_from - first.completed_at < dt.timedelta(days=14, seconds=5)
    assert len(events("reading_task.create", reread)) == 1
    worklist = selectors.worklist(reader)
    assert [row.task.pk for row in worklist.upcoming] == [reread.pk]
    assert worklist.upcoming[0].label.endswith("(re-read)") and worklist.pending == []
    opens = timezone.localtime(reread.available_from).strftime("%Y-%m-%d")
    with pytest.raises(RuleViolation, match=f"opens on {opens}"):
        services.reading_task_start(actor=actor_for(reader), task=reread)
    assert selectors.task_get(reader, reread.pk).status == TaskStatus.PENDING
    assert events("reading_task.start", reread) == []

    later = Clock(reread.available_from + dt.timedelta(minutes=1))
    monkeypatch.setattr(services, "timezone", later)
    monkeypatch.setattr(selectors, "timezone", later)
    assert [row.task.pk for row in selectors.worklist(reader).pending] == [reread.pk]
    read_task(reader, reread, TR5_READ)
    # A re-read is not re-read again, and a single panel reader never disagrees.
    assert len(case.tasks(TaskKind.PANEL)) == 2 and case.tasks(TaskKind.ADJUDICATION) == []


def _read_by_panel(case: Case, panel: list[Any], reads: list[dict[str, Any]]) -> list[Any]:
    tasks = case.tasks(TaskKind.PANEL)
    assert len(tasks) == len(reads)
    readers = []
    for task, data in zip(tasks, reads, strict=True):
        assert case.tasks(TaskKind.ADJUDICATION) == []  # not before every panel read is signed
        reader = reader_of(task, panel)
        read_task(reader, task, data)
        readers.append(reader)
    return readers


def test_adjudication_when_the_panel_disagrees_on_high_grade(
    make_case: MakeCase, panel: list[Any], recruiting: Trial, users: dict[str, Any]
) -> None:
    agreeing = cheap_case(make_case)
    _read_by_panel(agreeing, panel, [THYROID_READ, TR5_READ])  # TR4 and TR5: both high-grade
    assert agreeing.tasks(TaskKind.ADJUDICATION) == []

    disagreeing = cheap_case(make_case)
    readers = _read_by_panel(disagreeing, panel, [THYROID_READ, THYROID_BY_CATEGORY[LOW_GRADE]])
    (adjudication,) = disagreeing.tasks(TaskKind.ADJUDICATION)
    assert (adjudication.assignee, adjudication.status, adjudication.form) == (None, TaskStatus.PENDING, "thyroid")
    assert len(events("reading_task.create", adjudication)) == 1
    (adjudicator,) = [reader for reader in panel if reader not in readers]
    for reader in readers:  # who read the case for the panel may not adjudicate it
        assert adjudication.pk not in [row.task.pk for row in selectors.worklist(reader).pending]
        with pytest.raises(PermissionDenied):
            selectors.task_get(reader, adjudication.pk)
        with pytest.raises(NotAllowed, match="read this case for the panel"):
            services.reading_task_start(actor=actor_for(reader), task=adjudication)
    (row,) = [row for row in selectors.worklist(adjudicator).pending if row.task.kind == TaskKind.ADJUDICATION]
    assert row.label == f"Adjudication case {adjudication.pk}"
    read = read_task(adjudicator, adjudication, THYROID_READ)
    assert read.signature_meaning == services.SIGNATURE_MEANINGS[(TaskKind.ADJUDICATION, Phase.FINAL)]
    assert selectors.task_get(adjudicator, adjudication.pk).status == TaskStatus.DONE
    assert len(disagreeing.tasks(TaskKind.ADJUDICATION)) == 1

    set_policy(users, recruiting, adjudication_rule=AdjudicationRule.NONE)
    unadjudicated = cheap_case(make_case)
    _read_by_panel(unadjudicated, panel, [THYROID_READ, THYROID_BY_CATEGORY[NORMAL]])
    assert unadjudicated.tasks(TaskKind.ADJUDICATION) == []
    assert verify_chain().ok


def test_no_adjudication_until_every_first_panel_read_is_signed(
    make_case: MakeCase, panel: list[Any], recruiting: Trial, users: dict[str, Any]
) -> None:
    set_policy(users, recruiting, panel_readers_per_case=3)
    case = cheap_case(make_case)
    first, second, third = case.tasks(TaskKind.PANEL)
    read_task(reader_of(first, panel), first, THYROID_READ)
    read_task(reader_of(second, panel), second, THYROID_BY_CATEGORY[NORMAL])
    assert case.tasks(TaskKind.ADJUDICATION) == []  # disagreeing already, but the third read is open
    read_task(reader_of(third, panel), third, THYROID_READ)
    (adjudication,) = case.tasks(TaskKind.ADJUDICATION)
    # Every panel member read the case: nobody may adjudicate it.
    for reader in panel:
        with pytest.raises(NotAllowed, match="read this case for the panel"):
            services.reading_task_start(actor=actor_for(reader), task=adjudication)


def test_a_correction_that_creates_disagreement_asks_for_adjudication(make_case: MakeCase, panel: list[Any]) -> None:
    case = cheap_case(make_case)
    readers = _read_by_panel(case, panel, [THYROID_READ, THYROID_READ])
    assert case.tasks(TaskKind.ADJUDICATION) == []
    task = case.tasks(TaskKind.PANEL)[0]
    correct(readers[0], open_read(task), THYROID_BY_CATEGORY[LOW_GRADE], reason="Echogenicity misread")
    assert len(case.tasks(TaskKind.ADJUDICATION)) == 1


@pytest.mark.parametrize(
    ("first", "second", "rule", "disagree"),
    [
        (THYROID_READ, TR5_READ, AdjudicationRule.HIGH_GRADE, False),
        (THYROID_READ, TR5_READ, AdjudicationRule.CATEGORY, False),
        (TR2_READ, THYROID_BY_CATEGORY[LOW_GRADE], AdjudicationRule.HIGH_GRADE, False),
        (TR2_READ, THYROID_BY_CATEGORY[LOW_GRADE], AdjudicationRule.CATEGORY, True),
        (THYROID_READ, THYROID_BY_CATEGORY[NORMAL], AdjudicationRule.HIGH_GRADE, True),
        (THYROID_READ, THYROID_BY_CATEGORY[NORMAL], AdjudicationRule.NONE, False),
    ],
)
def test_panel_disagreement_rules(first: dict[str, Any], second: dict[str, Any], rule: str, disagree: bool) -> None:
    values = [services.validate_read("thyroid", first), services.validate_read("thyroid", second)]
    assert services.panel_disagreement("thyroid", values, rule) is disagree
    assert services.panel_disagreement("thyroid", values[:1], rule) is False


# --- Withdrawal -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [WithdrawalScope.STOP_FOLLOW_UP, WithdrawalScope.WITHDRAW_DATA])
def test_withdrawal_cancels_open_tasks(
    make_case: MakeCase, panel: list[Any], clinician: Any, coordinator: Any, scope: str
) -> None:
    case = cheap_case(make_case, Arm.AI_ASSISTED)
    clinical = start(clinician, case.task())
    save(clinician, clinical, {"composition": "solid"}, phase=Phase.UNAIDED)
    done, pending = case.tasks(TaskKind.PANEL)
    done_reader, pending_reader = reader_of(done, panel), reader_of(pending, panel)
    signed = read_task(done_reader, done, THYROID_READ)
    withdraw(coordinator, case.participant, scope)
    clinical.refresh_from_db()
    pending.refresh_from_db()
    done.refresh_from_db()
    for task in (clinical, pending):
        assert task.status == TaskStatus.CANCELLED
        assert task.cancelled_reason == "Participant withdrew: Participant asked to leave the study"
        (event,) = events("reading_task.cancel", task)
        assert event.actor_username == coordinator.username and event.after["status"] == TaskStatus.CANCELLED
    assert done.status == TaskStatus.DONE and len(events("reading_task.cancel")) == 2
    with pytest.raises(RuleViolation, match="cancelled: the participant withdrew"):
        save(clinician, clinical, THYROID_READ, phase=Phase.UNAIDED)
    with pytest.raises(RuleViolation, match="cancelled: the participant withdrew"):
        sign(clinician, clinical, THYROID_READ, phase=Phase.UNAIDED)
    with pytest.raises(RuleViolation, match="cancelled: the participant withdrew"):
        services.reading_task_start(actor=actor_for(pending_reader), task=pending)
    with pytest.raises(RuleViolation, match="participant withdrew"):
        correct(done_reader, signed, THYROID_BY_CATEGORY[NORMAL])
    assert open_read(clinical, Phase.UNAIDED).data == {"composition": "solid"}
    assert selectors.worklist(clinician).in_progress == [] and selectors.worklist(pending_reader).pending == []
    # Data withdrawn: the task no longer exists for its reader; otherwise it is no longer workable.
    with pytest.raises(Http404 if scope == WithdrawalScope.WITHDRAW_DATA else PermissionDenied):
        selectors.task_get(clinician, clinical.pk)
    assert services.reading_tasks_ensure(participant_id=case.participant.pk) == []
    assert verify_chain().ok


def test_stopping_ai_processing_alone_keeps_the_reading_tasks(
    make_case: MakeCase, clinician: Any, coordinator: Any, users: dict[str, Any]
) -> None:
    case = cheap_case(make_case, Arm.AI_ASSISTED)
    clinical = start(clinician, case.task())
    withdraw(coordinator, case.participant, WithdrawalScope.STOP_AI_PROCESSING)
    assert events("reading_task.cancel") == []
    assert {task.status for task in case.tasks(TaskKind.PANEL)} == {TaskStatus.PENDING}
    assert sign(clinician, clinical, THYROID_READ, phase=Phase.UNAIDED).is_signed
    read_task(users[Role.BLINDED_READER], case.task(TaskKind.PANEL), THYROID_READ)


# --- Blinding, role by role ------------------------------------------------------------------------------------


def test_what_each_role_gets_of_reading_tasks(
    ai_case: Case,
    make_case: MakeCase,
    users: dict[str, Any],
    clinician: Any,
    recruiting: Trial,
    site_b: Any,
    make_user: Callable[..., Any],
) -> None:
    other_clinical = cheap_case(make_case).task()
    clinical = ai_case.task()
    (panel_task,) = ai_case.tasks(TaskKind.PANEL)
    reader = users[Role.BLINDED_READER]
    readers = {Role.CLINICIAN_READER, Role.BLINDED_READER}
    for role in set(Role.values) - readers:
        for call in (
            lambda u: selectors.worklist(u),
            lambda u: selectors.task_get(u, clinical.pk),
            lambda u: selectors.task_get(u, panel_task.pk),
        ):
            with pytest.raises(PermissionDenied):
                call(users[role])
        with pytest.raises(NotAllowed):
            services.reading_task_start(actor=actor_for(users[role]), task=clinical)

    # The clinician: the site's clinical tasks, with study id and arm; never a panel task.
    worklist = selectors.worklist(clinician)
    assert {row.task.pk for row in worklist.pending} == {clinical.pk, other_clinical.pk}
    assert all(row.task.kind == TaskKind.CLINICAL for row in worklist.pending)
    assert {row.label for row in worklist.pending} == {
        ai_case.participant.study_id,
        other_clinical.participant.study_id,
    }
    assert selectors.arm_label(clinician, clinical) != ""
    with pytest.raises(Http404):
        selectors.task_get(clinician, panel_task.pk)
    with pytest.raises(NotAllowed):
        services.reading_task_start(actor=actor_for(clinician), task=panel_task)

    # The panel reader: their own panel tasks under a neutral label; never a clinical task.
    worklist = selectors.worklist(reader)
    assert all(row.task.kind == TaskKind.PANEL and row.task.assignee == reader for row in worklist.pending)
    assert panel_task.pk in {row.task.pk for row in worklist.pending}
    assert all(row.label.startswith("Case ") for row in worklist.pending)
    with pytest.raises(Http404):
        selectors.task_get(reader, clinical.pk)
    with pytest.raises(NotAllowed):
        services.reading_task_start(actor=actor_for(reader), task=clinical)
    assert selectors.arm_label(reader, panel_task) == "" and selectors.ai_visible(reader, panel_task) is False

    # A clinician of another site: the task does not exist for them.
    clinician_b = make_user("clinician-b", Role.CLINICIAN_READER, trial=recruiting, site=site_b)
    with pytest.raises(Http404):
        selectors.task_get(clinician_b, clinical.pk)
    assert selectors.worklist(clinician_b).pending == []
    with pytest.raises(NotAllowed):
        services.reading_task_start(actor=actor_for(clinician_b), task=clinical)

    # Work happens, with the AI shown once; then the participant's timeline per role.
    clinical = start(clinician, clinical)
    sign(clinician, clinical, THYROID_READ, phase=Phase.UNAIDED)
    services.ai_display_record(
        actor=actor_for(clinician), task=clinical, ai_result=ai_case.ai_results[0], what="suggestion"
    )
    sign(clinician, clinical, THYROID_READ)
    read_task(reader, panel_task, THYROID_READ)
    for role in (Role.PATHOLOGIST, Role.CLINICIAN_READER, Role.STATISTICIAN_BLINDED):
        timeline = list(trial_selectors.participant_timeline(users[role], ai_case.participant))
        assert timeline, role  # they do see the participant's history
        assert not [e.action for e in timeline if e.object_type in READING_OBJECT_TYPES], role
        assert not [e.action for e in timeline if e.action.startswith(("reading_", "read.", "ai_result."))], role
    audited = {e.action for e in trial_selectors.participant_timeline(users[Role.MONITOR], ai_case.participant)}
    assert {
        "reading_task.create",
        "reading_task.start",
        "read.sign",
        "ai_result.display",
    } <= audited
    assert verify_chain().ok


def test_after_a_withdrawal_from_ai_processing_no_ai_output_is_shown(
    ai_case: Case, clinician: Any, coordinator: Any
) -> None:
    task = start(clinician, ai_case.task())
    sign(clinician, task, THYROID_READ, phase=Phase.UNAIDED)
    task = selectors.task_get(clinician, task.pk)
    assert [opinion.result.pk for opinion in selectors.ai_second_opinion(clinician, task)] == [
        result.pk for result in ai_case.ai_results
    ]
    withdraw(coordinator, ai_case.participant, WithdrawalScope.STOP_AI_PROCESSING)
    task = selectors.task_get(clinician, task.pk)
    # The result made before the withdrawal is no longer used for the participant.
    assert selectors.ai_second_opinion(clinician, task) == []
    # The clinical read itself goes on.
    assert sign(clinician, task, THYROID_READ).is_signed


def test_correcting_a_final_read_compares_the_corrected_values_with_the_ai(ai_case: Case, clinician: Any) -> None:
    task = start(clinician, ai_case.task())
    sign(clinician, task, THYROID_READ, phase=Phase.UNAIDED)
    task = selectors.task_get(clinician, task.pk)
    [opinion] = selectors.ai_second_opinion(clinician, task)
    services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=opinion.result, what="suggestion")
    final = sign(clinician, task, THYROID_READ)
    assert final.interaction["changed_fields"] == {} and final.interaction["ai_viewed"] is True
    corrected = correct(clinician, final, {**THYROID_READ, "echogenicity": "very_hypoechoic"})
    assert corrected.interaction["changed_fields"]["echogenicity"] == ["hypoechoic", "very_hypoechoic"]
    assert corrected.interaction["ai_viewed"] is True
    assert corrected.interaction["seconds_to_final_decision"] == final.interaction["seconds_to_final_decision"]
    final.refresh_from_db()
    assert final.interaction["changed_fields"] == {}  # the first version keeps its own record
