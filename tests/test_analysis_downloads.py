"""Downloading the analysis data sets: the zip from the reports page (POST)
and from the API (GET, session or token) holds exactly the files
`manage.py export_analysis_data` writes, each download is an audited export
with its data hash, the blinded statistician gets masked arms, and those
without EXPORT_ANALYSIS_DATA (403) or outside the trial (404) get nothing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analysis import services
from randomization.models import Arm
from tests.conftest import SYSTEM, api_client, login
from tests.test_analysis_datasets import clinician, pathologist, small_trial  # noqa: F401  (fixtures)
from trial import services as trial_services
from trial.models import AuditEvent, Indication, Role, Trial

FILES = ["data_dictionary.csv", "manifest.json", "participants.csv", "reads.csv"]
DATA_FILES = ["data_dictionary.csv", "participants.csv", "reads.csv"]
REAL_ARM_ROLES = (Role.DSMB, Role.STATISTICIAN_UNBLINDED, Role.TRIAL_ADMIN)
NO_EXPORT_ROLES = (Role.COORDINATOR, Role.CLINICIAN_READER, Role.BLINDED_READER, Role.PATHOLOGIST, Role.MONITOR)


def web_url(trial: Trial) -> str:
    return reverse("analysis:data_download", args=[trial.pk])


def api_url(trial: Trial) -> str:
    return reverse("api-trial-analysis-data", args=[trial.pk])


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def arms(files: dict[str, bytes]) -> set[str]:
    rows = csv.DictReader(io.StringIO(files["participants.csv"].decode("utf-8")))
    return {row["arm"] for row in rows}


def last_export() -> AuditEvent:
    return AuditEvent.objects.filter(action="analysis.export").order_by("-sequence").first()  # type: ignore[return-value]


def check_download(response: Any, trial: Trial, user: Any) -> dict[str, bytes]:
    """The zip, its name and hash match the audit event just recorded."""
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/zip"
    assert response["Cache-Control"] == "private, no-store"
    event = last_export()
    digest = event.after["data_sha256"]
    assert event.actor_id == user.pk and event.trial_id == trial.pk
    assert response["Content-Disposition"] == (
        f'attachment; filename="consilium-{trial.code}-analysis-data-{digest[:12]}.zip"'
    )
    files = unzip(response.content)
    assert sorted(files) == FILES
    manifest = json.loads(files["manifest.json"])
    assert manifest["data_sha256"] == digest and manifest["audit_event"] == event.sequence
    assert manifest["made_by"] == user.get_username() and manifest["trial"] == trial.code
    for name in DATA_FILES:
        assert manifest["files"][name]["sha256"] == services.sha256(files[name]) == event.after["files"][name]
    return files


def test_the_zip_holds_exactly_what_the_command_writes(
    small_trial: dict[str, Any],  # noqa: F811
    users: dict[str, Any],
    tmp_path: Path,
) -> None:
    trial = small_trial["trial"]
    statistician = users[Role.STATISTICIAN_BLINDED]
    out = tmp_path / "export"
    call_command("export_analysis_data", trial=trial.code, user=statistician.username, out=str(out))
    written = {path.name: path.read_bytes() for path in out.iterdir()}

    response = login(statistician).post(web_url(trial))
    files = check_download(response, trial, statistician)
    assert sorted(written) == FILES
    for name in DATA_FILES:
        assert files[name] == written[name]
    command_manifest = json.loads(written["manifest.json"])
    zip_manifest = json.loads(files["manifest.json"])
    # The same manifest, but for the export it records (a later event, a later time).
    assert zip_manifest["audit_event"] == command_manifest["audit_event"] + 1
    for key in ("audit_event", "made_at"):
        command_manifest.pop(key)
        zip_manifest.pop(key)
    assert zip_manifest == command_manifest
    # The manifest's bytes are formatted as the command writes them.
    assert files["manifest.json"].endswith(b"}\n") and files["manifest.json"].startswith(b'{\n  "trial"')
    assert AuditEvent.objects.filter(action="analysis.export").count() == 2


def test_the_blinded_statistician_gets_masked_arms_others_the_real_ones(
    small_trial: dict[str, Any],  # noqa: F811
    users: dict[str, Any],
) -> None:
    trial = small_trial["trial"]
    blinded = users[Role.STATISTICIAN_BLINDED]
    files = check_download(login(blinded).post(web_url(trial)), trial, blinded)
    assert arms(files) == {"A", "B"}
    for name in DATA_FILES:
        assert b"ai_assisted" not in files[name] and b"specialist_only" not in files[name]
    assert json.loads(files["manifest.json"])["arm"] == "masked"
    assert last_export().after["arm"] == "masked"

    api_files = check_download(api_client(blinded).get(api_url(trial)), trial, blinded)
    assert arms(api_files) == {"A", "B"}

    for role in REAL_ARM_ROLES:
        files = check_download(login(users[role]).post(web_url(trial)), trial, users[role])
        assert arms(files) == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}
        assert json.loads(files["manifest.json"])["arm"] == "real"


def test_others_get_403_and_trials_outside_the_scope_404(
    small_trial: dict[str, Any],  # noqa: F811
    users: dict[str, Any],
) -> None:
    trial = small_trial["trial"]
    other = trial_services.trial_create(
        actor=SYSTEM,
        code="OTHER",
        title="Another trial",
        indications=[Indication.THYROID],
        planned_sample_size=10,
        start_date=dt.date(2026, 1, 5),
    )
    for role in NO_EXPORT_ROLES:
        assert login(users[role]).post(web_url(trial)).status_code == 403
        assert api_client(users[role]).get(api_url(trial)).status_code == 403
    statistician = users[Role.STATISTICIAN_UNBLINDED]
    for target in (other, Trial(pk=other.pk + 1000, code="NONE")):
        assert login(statistician).post(web_url(target)).status_code == 404
        assert api_client(statistician).get(api_url(target)).status_code == 404
    # A download is a POST on the page (it writes an audit event), a GET on the API.
    assert login(statistician).get(web_url(trial)).status_code == 405
    assert api_client(statistician).post(api_url(trial)).status_code == 405
    # Not logged in: the page sends to the login, the API says 401.
    anonymous = APIClient().post(web_url(trial))
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert APIClient().get(api_url(trial)).status_code == 401
    assert not AuditEvent.objects.filter(action="analysis.export").exists()


def test_the_api_answers_a_token_and_any_accept_header(
    small_trial: dict[str, Any],  # noqa: F811
    users: dict[str, Any],
) -> None:
    trial = small_trial["trial"]
    statistician = users[Role.STATISTICIAN_UNBLINDED]
    token = Token.objects.create(user=statistician)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get(api_url(trial), HTTP_ACCEPT="application/zip")
    files = check_download(response, trial, statistician)
    assert arms(files) == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}
    # Each download is its own audited export, with the same data hash while the data stand still.
    first = last_export()
    check_download(client.get(api_url(trial)), trial, statistician)
    second = last_export()
    assert second.sequence > first.sequence and second.after["data_sha256"] == first.after["data_sha256"]
    # Errors are JSON whatever was asked for.
    response = api_client(users[Role.COORDINATOR]).get(api_url(trial), HTTP_ACCEPT="application/zip")
    assert response.status_code == 403 and "detail" in response.json()


def test_the_reports_page_offers_a_download_per_trial(
    small_trial: dict[str, Any],  # noqa: F811
    users: dict[str, Any],
) -> None:
    trial = small_trial["trial"]
    page = login(users[Role.STATISTICIAN_BLINDED]).get(reverse("analysis:reports"))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'action="{web_url(trial)}"' in html and 'method="post"' in html
    assert "Download the analysis data sets (CSV)" in html
    assert "(arms masked)" in html
    html = login(users[Role.DSMB]).get(reverse("analysis:reports")).content.decode()
    assert f'action="{web_url(trial)}"' in html and "(arms masked)" not in html


@pytest.mark.django_db
def test_the_api_schema_describes_the_download(users: dict[str, Any]) -> None:
    paths = api_client(users[Role.TRIAL_ADMIN]).get("/api/schema/", {"format": "json"}).json()["paths"]
    operation = paths["/api/v1/trials/{id}/analysis-data.zip"]["get"]
    assert operation["operationId"] == "trial_analysis_data_export"
    assert "application/zip" in operation["responses"]["200"]["content"]
    assert {"401", "403", "404"} <= set(operation["responses"])
