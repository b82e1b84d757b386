"""manage.py simulate_trial: a small simulated trial, made through the
services, is complete and consistent, and a second run with the same code
is refused."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import CommandError, call_command

from ai_engine.models import AiResult, AiResultStatus
from analysis.management.commands.simulate_trial import Command
from analysis.simulation import SIMULATED_ITERATIONS, SIMULATED_PASSWORD
from imaging.models import Image, ImageStatus
from randomization.models import Allocation, Arm
from readings.models import AiDisplay, Phase, Read, ReadingTask, ReadStatus, TaskKind, TaskStatus
from trial.audit import verify_chain
from trial.models import (
    Participant,
    ReferenceStandardResult,
    ScreeningEntry,
    ScreeningStatus,
    Trial,
    Withdrawal,
)

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(Command(), *args, stdout=out)
    return out.getvalue()


def _check_trial(code: str, participants: int, panel_readers: int) -> Trial:
    trial = Trial.objects.get(code=code)
    assert Participant.objects.filter(trial=trial).count() == participants
    assert set(ScreeningEntry.objects.filter(trial=trial).values_list("indication", flat=True)) == {
        "cervical",
        "thyroid",
    }
    arms = set(Allocation.objects.filter(participant__trial=trial).values_list("arm", flat=True))
    assert arms == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}
    assert Allocation.objects.filter(participant__trial=trial).count() == participants
    # Every randomized participant with an accepted image has its clinical
    # task; those still accepting clinical data have it signed, with the
    # panel's reads.
    with_image = Participant.objects.filter(
        trial=trial, images__status=ImageStatus.ACCEPTED, allocation__isnull=False
    ).distinct()
    assert with_image.exists()
    for participant in with_image:
        clinical = ReadingTask.objects.get(participant=participant, kind=TaskKind.CLINICAL)
        if participant.data_withdrawn:
            assert clinical.status == TaskStatus.CANCELLED
            continue
        assert clinical.status == TaskStatus.DONE
        phases = set(
            Read.objects.filter(task=clinical, status=ReadStatus.SIGNED, current=True).values_list("phase", flat=True)
        )
        arm = Allocation.objects.get(participant=participant).arm
        assert phases == ({Phase.UNAIDED, Phase.FINAL} if arm == Arm.AI_ASSISTED else {Phase.FINAL})
        panel = ReadingTask.objects.filter(participant=participant, kind=TaskKind.PANEL, rereading_of__isnull=True)
        assert panel.count() == panel_readers
        assert set(panel.values_list("status", flat=True)) == {TaskStatus.DONE}
    # Every task is done (adjudications too) unless a withdrawal cancelled it,
    # and no read is left unsigned.
    assert set(ReadingTask.objects.filter(trial=trial).values_list("status", flat=True)) <= {
        TaskStatus.DONE,
        TaskStatus.CANCELLED,
    }
    assert not Read.objects.filter(task__trial=trial, status=ReadStatus.DRAFT).exists()
    done = AiResult.objects.filter(image__trial=trial, status=AiResultStatus.DONE)
    assert done.count() >= 1
    assert ReferenceStandardResult.objects.filter(participant__trial=trial).exists()
    report = verify_chain()
    assert report.ok, report.problem
    return trial


def test_simulated_trial_with_the_shipped_model() -> None:
    out = _run("--participants", "12", "--seed", "7", "--trial-code", "SIM-TEST")
    trial = _check_trial("SIM-TEST", 12, 3)
    # Each image has exactly one AI result, made by the model in-process (not simulated).
    images = Image.objects.filter(trial=trial, status=ImageStatus.ACCEPTED)
    assert images.count() >= 12 - Withdrawal.objects.filter(participant__trial=trial).count()
    for result in AiResult.objects.filter(image__trial=trial, status=AiResultStatus.DONE):
        assert result.device != "simulated"
    assert "participants" in out and "Simulated logins" in out and SIMULATED_PASSWORD in out
    # Screening has its refusals and exclusions around the 12 enrolled.
    assert ScreeningEntry.objects.filter(trial=trial).count() >= 12
    # The simulated accounts keep their fast hash after signing.
    reader = get_user_model().objects.get(username="sim-test-reader-1")
    assert reader.password.startswith(f"pbkdf2_sha256${SIMULATED_ITERATIONS}$")
    assert PBKDF2PasswordHasher().verify(SIMULATED_PASSWORD, reader.password)

    with pytest.raises(CommandError, match="already exists"):
        _run("--participants", "3", "--trial-code", "SIM-TEST")
    assert Participant.objects.filter(trial=trial).count() == 12
    assert Trial.objects.filter(code="SIM-TEST").count() == 1


def test_simulated_outputs_and_a_larger_run_have_every_state() -> None:
    _run("--participants", "60", "--seed", "3", "--trial-code", "SIM-OUT", "--panel-readers", "2", "--no-ai-model")
    trial = _check_trial("SIM-OUT", 60, 2)
    results = AiResult.objects.filter(image__trial=trial, status=AiResultStatus.DONE)
    assert results.exists() and set(results.values_list("device", flat=True)) == {"simulated"}
    statuses = set(ScreeningEntry.objects.filter(trial=trial).values_list("status", flat=True))
    assert ScreeningStatus.ENROLLED in statuses
    assert statuses & {ScreeningStatus.INELIGIBLE, ScreeningStatus.DECLINED, ScreeningStatus.NOT_ENROLLED}
    assert Withdrawal.objects.filter(participant__trial=trial).exists()
    # Panel disagreements were adjudicated by a reader outside the case's panel.
    adjudications = ReadingTask.objects.filter(trial=trial, kind=TaskKind.ADJUDICATION, status=TaskStatus.DONE)
    assert adjudications.exists()
    for task in adjudications:
        panel = ReadingTask.objects.filter(participant=task.participant, kind=TaskKind.PANEL)
        assert task.assignee_id not in set(panel.values_list("assignee_id", flat=True))
    # The AI-assisted arm saw the AI second opinion between its two reads.
    assert AiDisplay.objects.filter(task__trial=trial).exists()
    assert not AiDisplay.objects.filter(task__trial=trial, task__sequential=False).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--participants", "0"), "at least 1"),
        (("--participants", "2", "--panel-readers", "0"), "between 1 and 10"),
        (("--participants", "2", "--trial-code", "bad code!"), "letters, digits"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(args: Any, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        _run(*args)
    assert not Trial.objects.exists()
