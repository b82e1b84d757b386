"""The analysis data sets (analysis.datasets) and their export
(analysis.services): the columns and values of a small trial, the arm per
role (real, masked "A"/"B", absent, refused), withdrawal scopes, a constant
number of queries whatever the trial size, the CSV files read back, the data
dictionary, and the hash recorded in the audit trail."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analysis import datasets, services
from analysis.selectors import ExportScope
from randomization import selectors as randomization_selectors
from randomization.models import Allocation, Arm
from readings import services as reading_services
from readings.models import Phase, Read, ReadingTask, TaskKind
from tests.conftest import PASSWORD, actor_for
from tests.reading_fixtures import THYROID_READ, Case
from trial.actors import Actor
from trial.errors import NotAllowed
from trial.models import AuditEvent, Participant, Role, ScreeningEntry, Trial, WithdrawalScope
from trial.services import participant_withdraw, reference_result_record

MakeCase = Callable[..., Case]
TR3_READ = {**THYROID_READ, "echogenicity": "hyperechoic_isoechoic"}  # 3 points: TR3, low-grade
TODAY = timezone.localdate
AI_KEPT = {"ai_processing_stopped", "ai_processing_stopped_on", "ai_viewed"}


def sign(user: Any, task: ReadingTask, data: dict[str, Any], phase: str = Phase.FINAL) -> Read:
    revision = Read.objects.get(task=task, phase=phase, current=True).revision
    return reading_services.read_sign(
        actor=actor_for(user), task=task, phase=phase, data=data, revision=revision, password=PASSWORD
    )


def read_clinical(clinician: Any, case: Case, *, unaided: dict[str, Any] | None = None) -> Read:
    """Start and sign the clinical task (both phases when sequential, the AI
    shown in between); the final read is THYROID_READ (TR4)."""
    task = case.task()
    reading_services.reading_task_start(actor=actor_for(clinician), task=task)
    task.refresh_from_db()
    if task.sequential:
        sign(clinician, task, unaided or TR3_READ, Phase.UNAIDED)
        task.refresh_from_db()
        for result in case.ai_results:
            reading_services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=result, what="contour")
    return sign(clinician, task, dict(THYROID_READ))


def read_panel(case: Case, panel: list[Any], data: dict[str, Any]) -> list[Read]:
    reads = []
    for task in case.tasks(TaskKind.PANEL):
        reader = next(r for r in panel if r.pk == task.assignee_id)
        reading_services.reading_task_start(actor=actor_for(reader), task=task)
        task.refresh_from_db()
        reads.append(sign(reader, task, data))
    return reads


def reference(user: Any, participant: Participant, **values: Any) -> Any:
    values.setdefault("sample_date", TODAY())
    values.setdefault("result_date", TODAY())
    return reference_result_record(actor=actor_for(user), participant=participant, **values)


def withdraw(coordinator: Any, participant: Participant, scope: str, on: dt.date | None = None) -> None:
    participant_withdraw(
        actor=actor_for(coordinator),
        participant=participant,
        withdrawn_on=on or TODAY(),
        scope=scope,
        reason="Participant asked to leave the study",
    )


def fresh(user: Any) -> Any:
    """The user read again (no cached memberships)."""
    return get_user_model().objects.get(pk=user.pk)


def by_study_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["study_id"]: row for row in rows}


@pytest.fixture
def clinician(users: dict[str, Any]) -> Any:
    return users[Role.CLINICIAN_READER]


@pytest.fixture
def pathologist(users: dict[str, Any]) -> Any:
    return users[Role.PATHOLOGIST]


@pytest.fixture
def small_trial(
    make_case: MakeCase, panel: list[Any], clinician: Any, pathologist: Any, recruiting: Trial
) -> dict[str, Any]:
    """An AI-arm case (AI result, sequential read, two panel reads, a
    malignant histology) and a specialist-arm case (one read, benign
    cytology then benign histology)."""
    ai = make_case(Arm.AI_ASSISTED, images=("grey",), ai=True)
    assert ai.ai_results and ai.ai_results[0].status == "done"
    specialist = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    read_clinical(clinician, ai)
    read_clinical(clinician, specialist)
    read_panel(ai, panel, dict(THYROID_READ))
    reference(pathologist, ai.participant, kind="thyroid_histology", thyroid_histology="papillary")
    reference(pathologist, specialist.participant, kind="thyroid_cytology", bethesda_category=2)
    reference(pathologist, specialist.participant, kind="thyroid_histology", thyroid_histology="benign")
    return {"ai": ai, "specialist": specialist, "trial": recruiting}


# --- Columns and values -------------------------------------------------------------------


def test_one_row_per_randomized_participant_with_reads_ai_and_reference(
    small_trial: dict[str, Any], users: dict[str, Any], clinician: Any
) -> None:
    ai_case, specialist = small_trial["ai"], small_trial["specialist"]
    data = datasets.analysis_datasets(users[Role.STATISTICIAN_UNBLINDED], small_trial["trial"].pk)
    names = [column.name for column in data.participants.columns]
    assert len(names) == len(set(names))
    for row in data.participants.rows:
        assert list(row) == names  # every row has every column, in order
    randomized = Participant.objects.filter(trial=small_trial["trial"], allocation__isnull=False).count()
    assert len(data.participants.rows) == randomized
    rows = by_study_id(data.participants.rows)

    row = rows[ai_case.participant.study_id]
    final = Read.objects.get(task=ai_case.task(), phase=Phase.FINAL, current=True)
    (result,) = ai_case.ai_results
    assert row["arm"] == Arm.AI_ASSISTED
    assert row["site"] == "C01" and row["indication"] == "thyroid"
    assert row["cov_nodule_size_band"] == "10-19" and row["cov_hpv_status"] is None
    assert row["stratum"] == Allocation.objects.get(participant=ai_case.participant).stratum
    assert row["year_of_birth"] == ai_case.participant.year_of_birth and row["sex"] == ai_case.participant.sex
    assert row["randomized_at"] == Allocation.objects.get(participant=ai_case.participant).allocated_at
    assert (row["unaided_category"], row["unaided_high_grade"], row["unaided_tirads_level"]) == (
        "low-grade",
        False,
        "TR3",
    )
    assert (row["final_category"], row["final_high_grade"], row["final_tirads_points"]) == ("high-grade", True, 4)
    assert row["final_tirads_level"] == "TR4" and row["final_sampling_recommended"] is True  # 18 mm ≥ 15 mm
    assert row["final_swede_total"] is None and row["final_confidence"] == 4 and row["final_time_spent_s"] == 95
    assert row["final_signed_at"] == final.signed_at
    assert row["ai_viewed"] is True
    assert row["ai_influence"] == final.interaction["category_change"] is not None
    assert (row["panel_n"], row["panel_n_high_grade"], row["panel_majority_category"]) == (2, 2, "high-grade")
    assert row["adjudication_category"] is None
    assert (row["ai_status"], row["ai_images"], row["ai_category"]) == ("done", 1, result.category)
    assert row["ai_category_probability"] == result.category_probability
    assert row["ai_high_grade_probability"] == result.category_probabilities["high-grade"]
    assert row["ai_lesion_count"] == result.measurements["lesion_count"]
    assert row["ai_model_version"] == f"{result.model_version.name} {result.model_version.version}"
    assert (row["reference_n"], row["reference_kind"], row["reference_high_grade"]) == (
        1,
        "thyroid_histology",
        True,
    )
    assert row["reference_result_date"] == TODAY() and row["days_to_diagnosis"] == 0
    assert row["follow_up_stopped"] is False and row["follow_up_stopped_on"] is None

    row = rows[specialist.participant.study_id]
    assert row["arm"] == Arm.SPECIALIST_ONLY
    assert row["unaided_category"] is None and row["unaided_signed_at"] is None  # no unaided phase in this arm
    assert row["final_category"] == "high-grade" and row["ai_viewed"] is None and row["panel_n"] == 0
    # Histology wins over cytology: benign.
    assert (row["reference_n"], row["reference_kind"], row["reference_high_grade"]) == (
        2,
        "thyroid_histology",
        False,
    )
    assert row["clinical_reader"] == rows[ai_case.participant.study_id]["clinical_reader"]

    # Randomized on the way, never imaged: a row with nothing read.
    others = [
        r for sid, r in rows.items() if sid not in (ai_case.participant.study_id, specialist.participant.study_id)
    ]
    assert all(r["final_category"] is None and r["reference_n"] == 0 for r in others)


def test_one_row_per_signed_current_read_with_pseudonymous_readers(
    small_trial: dict[str, Any], users: dict[str, Any], clinician: Any, panel: list[Any]
) -> None:
    ai_case = small_trial["ai"]
    data = datasets.analysis_datasets(users[Role.STATISTICIAN_BLINDED], small_trial["trial"].pk)
    rows = data.reads.rows
    names = [column.name for column in data.reads.columns]
    assert all(list(row) == names for row in rows)
    kinds = [(r["study_id"], r["task_kind"], r["phase"]) for r in rows]
    sid, other = ai_case.participant.study_id, small_trial["specialist"].participant.study_id
    assert sorted(kinds) == sorted(
        [
            (sid, "clinical", "unaided"),
            (sid, "clinical", "final"),
            (sid, "panel", "final"),
            (sid, "panel", "final"),
            (other, "clinical", "final"),
        ]
    )
    assert Read.objects.filter(status="signed", current=True).count() == 5
    clinical = [r for r in rows if r["task_kind"] == "clinical"]
    panel_rows = [r for r in rows if r["task_kind"] == "panel"]
    assert {r["reader"] for r in clinical} == {"R1"}  # the first reader met is R1
    assert {r["reader"] for r in panel_rows} == {"R2", "R3"}
    final = next(r for r in clinical if r["study_id"] == sid and r["phase"] == "final")
    assert (final["tirads_points"], final["tirads_level"], final["fna"], final["composition"]) == (
        4,
        "TR4",
        "fna",
        "solid",
    )
    assert final["echogenic_foci"] == ["none"] and final["largest_diameter_mm"] == 18
    assert final["adequacy"] is None and final["swede_total"] is None  # colposcopy fields, thyroid read
    assert final["category"] == "high-grade" and final["high_grade"] is True and final["version"] == 1
    # No user name or id in the files.
    blob = data.reads.to_csv() + data.participants.to_csv()
    for user in [clinician, *panel]:
        assert user.username.encode() not in blob


# --- Blinding -------------------------------------------------------------------------------


def test_the_arm_is_real_masked_or_refused_by_role(small_trial: dict[str, Any], users: dict[str, Any]) -> None:
    trial = small_trial["trial"]
    for role in (Role.STATISTICIAN_UNBLINDED, Role.DSMB, Role.TRIAL_ADMIN):
        data = datasets.analysis_datasets(users[role], trial.pk)
        assert data.scope.arm_mode == "real"
        assert {row["arm"] for row in data.participants.rows} == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}

    blinded = users[Role.STATISTICIAN_BLINDED]
    data = datasets.analysis_datasets(blinded, trial.pk)
    assert data.scope.arm_mode == "masked"
    assert {row["arm"] for row in data.participants.rows} == {"A", "B"}
    allocations = {a.participant.study_id: a for a in Allocation.objects.select_related("participant", "trial")}
    for row in data.participants.rows:
        # The very labels the blinded statistician sees on every page.
        assert row["arm"] == randomization_selectors.arm_view(blinded, allocations[row["study_id"]]).label
    assert b"ai_assisted" not in data.participants.to_csv() and b"specialist_only" not in data.dictionary_csv()
    arm_column = next(c for c in data.participants.columns if c.name == "arm")
    assert arm_column.allowed == ("A", "B")

    for role in (Role.CLINICIAN_READER, Role.COORDINATOR, Role.BLINDED_READER, Role.PATHOLOGIST, Role.MONITOR):
        with pytest.raises(PermissionDenied):
            datasets.analysis_datasets(users[role], trial.pk)
        with pytest.raises(NotAllowed):
            services.analysis_export_create(actor=actor_for(users[role]), trial=trial)
    assert not AuditEvent.objects.filter(action="analysis.export").exists()


def test_the_data_sets_are_trial_wide(small_trial: dict[str, Any], make_user: Callable[..., Any], site_a: Any) -> None:
    """A site-scoped statistician holds the capability, but not for the
    whole trial: the trial is not found for them (404), and the service refuses."""
    trial = small_trial["trial"]
    local = make_user("local-statistician", Role.STATISTICIAN_UNBLINDED, trial=trial, site=site_a)
    with pytest.raises(Http404):
        datasets.analysis_datasets(local, trial.pk)
    with pytest.raises(NotAllowed):
        services.analysis_export_create(actor=actor_for(local), trial=trial)
    with pytest.raises(NotAllowed, match="named user"):
        services.analysis_export_create(actor=Actor.system("test"), trial=trial)


def test_a_scope_without_the_arm_has_no_arm_column(small_trial: dict[str, Any], users: dict[str, Any]) -> None:
    trial = small_trial["trial"]
    data = datasets.build_datasets(ExportScope(trial, Role.STATISTICIAN_BLINDED, "none", {}))
    assert "arm" not in [column.name for column in data.participants.columns]
    assert all("arm" not in row for row in data.participants.rows)
    header = data.participants.to_csv().split(b"\n")[0].split(b",")
    assert b"arm" not in header and b"stratum" in header


# --- Withdrawal scopes ----------------------------------------------------------------------


def test_withdrawal_scopes(
    small_trial: dict[str, Any],
    make_case: MakeCase,
    users: dict[str, Any],
    clinician: Any,
    coordinator: Any,
    pathologist: Any,
) -> None:
    trial = small_trial["trial"]
    ai_case = small_trial["ai"]
    gone = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    read_clinical(clinician, gone)
    reference(pathologist, gone.participant, kind="thyroid_histology", thyroid_histology="benign")
    withdraw(coordinator, gone.participant, WithdrawalScope.WITHDRAW_DATA)
    withdraw(coordinator, ai_case.participant, WithdrawalScope.STOP_AI_PROCESSING)

    # Follow-up stopped yesterday: a read signed today and a result reported
    # today are after it; a result reported the day before is kept.
    late = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    three_days_ago = timezone.now() - dt.timedelta(days=3)
    Participant.objects.filter(pk=late.participant.pk).update(enrolled_at=three_days_ago)
    ScreeningEntry.objects.filter(pk=late.participant.screening_id).update(screened_on=three_days_ago.date())
    read_clinical(clinician, late)
    reference(
        pathologist,
        late.participant,
        kind="thyroid_cytology",
        bethesda_category=6,
        sample_date=TODAY() - dt.timedelta(days=3),
        result_date=TODAY() - dt.timedelta(days=2),
    )
    reference(pathologist, late.participant, kind="thyroid_histology", thyroid_histology="benign")
    withdraw(coordinator, late.participant, WithdrawalScope.STOP_FOLLOW_UP, on=TODAY() - dt.timedelta(days=1))

    data = datasets.analysis_datasets(users[Role.STATISTICIAN_UNBLINDED], trial.pk)
    rows = by_study_id(data.participants.rows)
    read_ids = {r["study_id"] for r in data.reads.rows}
    assert gone.participant.study_id not in rows and gone.participant.study_id not in read_ids
    assert gone.participant.study_id.encode() not in data.participants.to_csv() + data.reads.to_csv()

    row = rows[ai_case.participant.study_id]
    assert row["ai_processing_stopped"] is True and row["ai_processing_stopped_on"] == TODAY()
    ai_output = [name for name in row if name.startswith("ai_") and name not in AI_KEPT]
    assert len(ai_output) == 8 and all(row[name] is None for name in ai_output)
    # Whether the reader was shown the AI before the withdrawal is the reader's act, kept.
    assert row["ai_viewed"] is True
    assert row["final_category"] == "high-grade" and row["panel_n"] == 2  # the reads stay

    row = rows[late.participant.study_id]
    assert row["follow_up_stopped"] is True and row["follow_up_stopped_on"] == TODAY() - dt.timedelta(days=1)
    assert row["final_category"] is None and late.participant.study_id not in read_ids
    assert (row["reference_n"], row["reference_kind"], row["reference_high_grade"]) == (1, "thyroid_cytology", True)
    assert row["reference_result_date"] == TODAY() - dt.timedelta(days=2)


# --- Queries --------------------------------------------------------------------------------


def test_the_number_of_queries_does_not_grow_with_the_trial(
    small_trial: dict[str, Any], make_case: MakeCase, users: dict[str, Any], clinician: Any, pathologist: Any
) -> None:
    trial = small_trial["trial"]
    statistician = users[Role.STATISTICIAN_BLINDED]

    def count() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            data = datasets.analysis_datasets(fresh(statistician), trial.pk)
        return len(queries), len(data.participants.rows)

    small, n_small = count()
    for _ in range(3):
        case = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
        read_clinical(clinician, case)
        reference(pathologist, case.participant, kind="thyroid_histology", thyroid_histology="benign")
    large, n_large = count()
    assert n_large > n_small + 2
    assert large == small <= 12


# --- CSV, dictionary, hash, audit ------------------------------------------------------------


def test_csv_files_read_back_and_the_dictionary_describes_every_column(
    small_trial: dict[str, Any], users: dict[str, Any]
) -> None:
    data = datasets.analysis_datasets(users[Role.STATISTICIAN_UNBLINDED], small_trial["trial"].pk)
    for dataset in data.datasets:
        raw = dataset.to_csv()
        raw.decode("utf-8")  # UTF-8
        read_back = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        assert [list(r) for r in read_back] == [[c.name for c in dataset.columns]] * len(dataset.rows)
        assert read_back == [{k: datasets.format_value(v) for k, v in row.items()} for row in dataset.rows]
        frame = pd.read_csv(io.BytesIO(raw))
        assert list(frame.columns) == [c.name for c in dataset.columns] and len(frame) == len(dataset.rows)

    frame = pd.read_csv(io.BytesIO(data.participants.to_csv()), parse_dates=["randomized_at", "reference_result_date"])
    sid = small_trial["ai"].participant.study_id
    row = frame[frame.study_id == sid].iloc[0]
    assert row.final_high_grade == 1 and row.reference_high_grade == 1 and row.final_tirads_points == 4
    assert str(row.reference_result_date.date()) == TODAY().isoformat()
    assert pd.isna(frame[frame.study_id == small_trial["specialist"].participant.study_id].iloc[0].unaided_category)

    dictionary = list(csv.DictReader(io.StringIO(data.dictionary_csv().decode("utf-8"))))
    assert [(d["dataset"], d["column"]) for d in dictionary] == [
        (dataset.name, column.name) for dataset in data.datasets for column in dataset.columns
    ]
    entry = {(d["dataset"], d["column"]): d for d in dictionary}
    assert entry[("participants", "final_category")]["allowed_values"] == "normal;low-grade;high-grade"
    assert entry[("participants", "arm")]["allowed_values"] == "ai_assisted;specialist_only"
    assert entry[("reads", "composition")]["type"] == "category"
    assert "solid" in entry[("reads", "composition")]["allowed_values"].split(";")
    assert entry[("reads", "largest_diameter_mm")]["type"] == "number"
    assert all(d["type"] and d["description"] for d in dictionary)


def test_format_value() -> None:
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert datasets.format_value(moment) == "2026-03-04T03:06:07Z"
    assert datasets.format_value(dt.date(2026, 3, 4)) == "2026-03-04"
    assert [datasets.format_value(v) for v in (None, "", True, False, 0, 0.25, ["a", "b"])] == [
        "",
        "",
        "1",
        "0",
        "0",
        "0.25",
        "a;b",
    ]


def test_an_export_records_its_hash_which_is_reproducible_and_follows_the_data(
    small_trial: dict[str, Any], users: dict[str, Any], pathologist: Any
) -> None:
    trial = small_trial["trial"]
    statistician = users[Role.STATISTICIAN_BLINDED]
    first = services.analysis_export_create(actor=actor_for(statistician), trial=trial)
    second = services.analysis_export_create(actor=actor_for(statistician), trial=trial)
    assert first.data_sha256 == second.data_sha256 and len(first.data_sha256) == 64
    assert first.files == second.files

    events = list(AuditEvent.objects.filter(action="analysis.export").order_by("sequence"))
    assert [e.pk for e in events] == [first.event.pk, second.event.pk]
    event = events[0]
    assert event.actor_id == statistician.pk and event.role == Role.STATISTICIAN_BLINDED
    assert event.trial_id == trial.pk and event.object_type == "trial.trial"
    assert event.after["data_sha256"] == first.data_sha256 and event.after["arm"] == "masked"
    assert event.after["participants"] == len(first.datasets.participants.rows)
    assert event.after["files"]["participants.csv"] == services.sha256(first.files["participants.csv"])
    # The hash is the hash of the sha256sum lines of the two data files.
    assert first.data_sha256 == services.sha256(
        (
            f"{services.sha256(first.files['participants.csv'])}  participants.csv\n"
            f"{services.sha256(first.files['reads.csv'])}  reads.csv\n"
        ).encode()
    )

    # The unblinded export is other data: another hash.
    unblinded = services.analysis_export_create(actor=actor_for(users[Role.STATISTICIAN_UNBLINDED]), trial=trial)
    assert unblinded.data_sha256 != first.data_sha256

    # New data, new hash.
    reference(pathologist, small_trial["ai"].participant, kind="thyroid_cytology", bethesda_category=6)
    third = services.analysis_export_create(actor=actor_for(statistician), trial=trial)
    assert third.data_sha256 != first.data_sha256
    assert third.files["reads.csv"] == first.files["reads.csv"]


def test_the_export_command_writes_the_files_and_a_manifest(
    small_trial: dict[str, Any], users: dict[str, Any], tmp_path: Path
) -> None:
    trial = small_trial["trial"]
    statistician = users[Role.STATISTICIAN_BLINDED]
    out = tmp_path / "export"
    call_command("export_analysis_data", trial=trial.code, user=statistician.username, out=str(out))
    assert sorted(p.name for p in out.iterdir()) == [
        "data_dictionary.csv",
        "manifest.json",
        "participants.csv",
        "reads.csv",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    event = AuditEvent.objects.get(action="analysis.export")
    assert manifest["data_sha256"] == event.after["data_sha256"] and manifest["arm"] == "masked"
    for name in ("participants.csv", "reads.csv", "data_dictionary.csv"):
        assert manifest["files"][name]["sha256"] == services.sha256((out / name).read_bytes())

    with pytest.raises(CommandError, match="not empty"):
        call_command("export_analysis_data", trial=trial.code, user=statistician.username, out=str(out))
    with pytest.raises(CommandError, match="does not permit"):
        call_command(
            "export_analysis_data", trial=trial.code, user=users[Role.COORDINATOR].username, out=str(tmp_path / "x")
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(CommandError, match="No trial"):
        call_command("export_analysis_data", trial="NOPE", user=statistician.username, out=str(tmp_path / "y"))
    assert AuditEvent.objects.filter(action="analysis.export").count() == 1


def test_only_the_current_version_of_a_corrected_read_is_used(
    small_trial: dict[str, Any], users: dict[str, Any], clinician: Any
) -> None:
    specialist = small_trial["specialist"]
    statistician = users[Role.STATISTICIAN_UNBLINDED]
    before = services.analysis_export_create(actor=actor_for(statistician), trial=small_trial["trial"])
    signed = Read.objects.get(task=specialist.task(), phase=Phase.FINAL, current=True)
    reading_services.read_correct(
        actor=actor_for(clinician),
        read=signed,
        data={**THYROID_READ, "largest_diameter_mm": 12},
        reason="Diameter re-measured",
        password=PASSWORD,
    )
    after = services.analysis_export_create(actor=actor_for(statistician), trial=small_trial["trial"])
    sid = specialist.participant.study_id
    rows = [r for r in after.datasets.reads.rows if r["study_id"] == sid]
    assert [(r["version"], r["largest_diameter_mm"], r["fna"]) for r in rows] == [(2, 12, "follow-up")]
    row = by_study_id(after.datasets.participants.rows)[sid]
    assert row["final_sampling_recommended"] is False and row["final_category"] == "high-grade"
    assert len(after.datasets.reads.rows) == len(before.datasets.reads.rows)
    assert after.data_sha256 != before.data_sha256
