"""manage.py import_images: a folder export for one participant, as a user
allowed to upload at the participant's site; one JSON line per file; exit
status 1 when anything was rejected."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from imaging.models import Image, ImageStatus
from tests.imaging_files import (
    jpeg_with_metadata,
    other_trial_participant,
    randomized,
    real_dicom,
    ultrasound_dicom,
)
from trial.models import Participant


@pytest.fixture
def thyroid(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="thyroid"), coordinator)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """A PACS-like export: nested folders, a copy of one file, a photo that
    does not belong to a thyroid participant, names that say nothing."""
    root = tmp_path / "export"
    (root / "b_series").mkdir(parents=True)
    (root / "a_series" / "deeper").mkdir(parents=True)
    (root / "a_series" / "IM0002").write_bytes(real_dicom("examples_rgb_color.dcm"))
    (root / "a_series" / "IM0001").write_bytes(real_dicom("examples_palette.dcm"))
    (root / "a_series" / "deeper" / "IM0003").write_bytes(real_dicom("examples_rgb_color.dcm"))
    (root / "b_series" / "IM0001.jpg").write_bytes(jpeg_with_metadata())
    (root / "b_series" / "IM0002").write_bytes(ultrasound_dicom(frames=2))
    return root


def run(*arguments: str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command("import_images", *arguments, stdout=out, stderr=err)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_it_imports_a_folder_recursively_in_sorted_order(export: Path, coordinator: Any, thyroid: Participant) -> None:
    code, lines, err = run("--participant", thyroid.study_id, "--user", coordinator.username, str(export))
    assert [Path(line["file"]).relative_to(export).as_posix() for line in lines] == [
        "a_series/IM0001",
        "a_series/IM0002",
        "a_series/deeper/IM0003",
        "b_series/IM0001.jpg",
        "b_series/IM0002",
    ]
    assert [line["status"] for line in lines] == ["accepted", "accepted", "duplicate", "rejected", "accepted"]
    assert lines[2]["image_id"] == lines[1]["image_id"]
    assert "does not fit a thyroid participant" in lines[3]["reason"]
    assert lines[0]["reason"] == "" and isinstance(lines[0]["image_id"], int)
    assert code == 1
    assert "1 of 5 file(s) rejected" in err
    assert Image.objects.filter(participant=thyroid).exclude(status=ImageStatus.REJECTED).count() == 3
    rejected = Image.objects.get(status=ImageStatus.REJECTED)
    assert rejected.pk == lines[3]["image_id"] and rejected.original_name == "IM0001.jpg"


def test_it_exits_zero_when_nothing_is_rejected(tmp_path: Path, coordinator: Any, thyroid: Participant) -> None:
    single = tmp_path / "one.dcm"
    single.write_bytes(real_dicom("examples_jpeg2k.dcm"))
    code, lines, _ = run("--participant", thyroid.study_id, "--user", coordinator.username, str(single))
    assert code == 0
    assert [(line["status"], line["file"]) for line in lines] == [("accepted", str(single))]
    # Once more: a duplicate is not a rejection.
    code, lines, _ = run("--participant", thyroid.study_id, "--user", coordinator.username, str(single))
    assert code == 0 and lines[0]["status"] == "duplicate"


def test_a_user_not_allowed_at_the_site_is_refused(export: Path, coordinator_b: Any, thyroid: Participant) -> None:
    with pytest.raises(CommandError, match=f"may not upload images for {thyroid.study_id} at site C01"):
        run("--participant", thyroid.study_id, "--user", coordinator_b.username, str(export))
    assert not Image.objects.exists()


def test_the_user_is_required(export: Path, thyroid: Participant) -> None:
    with pytest.raises(CommandError, match="--user"):
        run("--participant", thyroid.study_id, str(export))


def test_an_unknown_user_or_participant_is_refused(export: Path, coordinator: Any, thyroid: Participant) -> None:
    with pytest.raises(CommandError, match="No active user 'nobody'"):
        run("--participant", thyroid.study_id, "--user", "nobody", str(export))
    with pytest.raises(CommandError, match="No participant 'C09-9999'"):
        run("--participant", "C09-9999", "--user", coordinator.username, str(export))


def test_a_missing_path_is_refused_before_anything_is_imported(
    export: Path, coordinator: Any, thyroid: Participant
) -> None:
    with pytest.raises(CommandError, match="No such file or folder"):
        run("--participant", thyroid.study_id, "--user", coordinator.username, str(export), str(export / "absent"))
    assert not Image.objects.exists()


def test_a_study_id_in_two_trials_needs_the_trial(
    tmp_path: Path, coordinator: Any, thyroid: Participant, make_user: Callable[..., Any]
) -> None:
    other, other_coordinator = other_trial_participant(make_user)
    assert other.study_id == thyroid.study_id
    single = tmp_path / "one.dcm"
    single.write_bytes(real_dicom("examples_rgb_color.dcm"))
    with pytest.raises(CommandError, match="exists in several trials \\(CONSILIUM, OTHER\\); name one with --trial"):
        run("--participant", thyroid.study_id, "--user", coordinator.username, str(single))
    code, lines, _ = run(
        "--participant", other.study_id, "--trial", "OTHER", "--user", other_coordinator.username, str(single)
    )
    assert code == 0 and lines[0]["status"] == "accepted"
    assert Image.objects.get().participant == other
