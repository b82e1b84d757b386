"""The readings API end to end: worklists and cases per role (blinded panel
readers receive nothing of the participant, the arm or the AI), drafts and
the two-tab conflict, signatures with form errors and wrong passwords,
corrections, the AI second opinion and its display record, frames,
oversight and the reading policy."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.middleware.csrf import get_token
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from randomization.models import Arm
from readings import services
from readings.models import AiDisplay, Phase, Read, ReadingPolicy, ReadStatus, TaskKind
from tests.conftest import PASSWORD, actor_for, api_client
from tests.reading_fixtures import COLPOSCOPY_READ, THYROID_READ, Case, valid_read
from trial.models import AuditEvent, Role

ARM_TEXTS = ("AI-assisted", "Specialist only", "ai_assisted", "specialist_only")
ROW_KEYS = {"id", "label", "kind", "status", "phase", "due_at", "overdue", "available_from", "url"}
CASE_KEYS = {
    "id",
    "label",
    "kind",
    "status",
    "form",
    "phase",
    "due_at",
    "fields",
    "signature_meaning",
    "images",
    "reads",
}
CLINICAL_CASE_KEYS = CASE_KEYS | {"sequential", "arm", "ai_available"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _url(name: str, **kwargs: Any) -> str:
    return reverse(name, kwargs=kwargs)


def _keys(payload: Any) -> Iterator[str]:
    if isinstance(payload, dict):
        for key, value in payload.items():
            yield str(key)
            yield from _keys(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from _keys(item)


def assert_blind(payload: Any, case: Case) -> None:
    """Nothing of the participant, the arm or the AI in what a panel reader receives."""
    text = json.dumps(payload)
    participant = case.participant
    for secret in (participant.study_id, participant.site.code, participant.site.name, *ARM_TEXTS):
        assert secret not in text, secret
    keys = set(_keys(payload))
    assert not {key for key in keys if key.startswith("ai")}, keys
    assert not keys & {"arm", "study_id", "site", "sequential", "interaction", "contour_url", "heatmap_url"}


def _start(user: Any, task: Any) -> dict[str, Any]:
    response = api_client(user).post(_url("api-reading-task-start", pk=task.pk))
    assert response.status_code == 200, response.content
    return response.json()


def _sign(user: Any, task: Any, phase: str, data: dict[str, Any], revision: int = 0, password: str = PASSWORD) -> Any:
    body = {"phase": phase, "revision": revision, "data": data, "password": password}
    return api_client(user).post(_url("api-reading-sign", pk=task.pk), body, format="json")


def _displays(task: Any) -> tuple[int, int]:
    return (
        AiDisplay.objects.filter(task=task).count(),
        AuditEvent.objects.filter(action="ai_result.display").count(),
    )


# --- Worklists and cases per role ----------------------------------------------------------


def test_a_clinician_sees_the_study_id_and_arm_and_a_panel_reader_sees_neither(
    make_case: Callable[..., Case], panel: list[Any], users: dict[str, Any]
) -> None:
    case = make_case(Arm.AI_ASSISTED, ai=False)
    clinical = case.task()
    clinician = users[Role.CLINICIAN_READER]

    worklist = api_client(clinician).get(_url("api-reading-tasks"))
    assert worklist.status_code == 200
    (row,) = worklist.json()["pending"]
    assert set(row) == ROW_KEYS | {"study_id", "arm"}
    assert (row["id"], row["study_id"], row["arm"]) == (clinical.pk, case.participant.study_id, "AI-assisted")
    assert (row["kind"], row["phase"], row["label"]) == ("clinical", "unaided", case.participant.study_id)
    assert row["url"] == _url("api-reading-task", pk=clinical.pk)
    assert worklist.json()["overdue"] == 0

    panel_task = case.tasks(TaskKind.PANEL)[0]
    reader = panel_task.assignee
    worklist = api_client(reader).get(_url("api-reading-tasks"))
    assert worklist.status_code == 200
    (row,) = worklist.json()["pending"]
    assert set(row) == ROW_KEYS
    assert (row["id"], row["kind"], row["label"]) == (
        panel_task.pk,
        "panel",
        f"Case {panel_task.order_key[:6].upper()}",
    )
    assert_blind(worklist.json(), case)


def test_a_panel_readers_case_and_frames_carry_nothing_of_the_participant_the_arm_or_the_ai(
    make_case: Callable[..., Case], panel: list[Any]
) -> None:
    case = make_case(Arm.AI_ASSISTED)
    assert case.ai_results, "the case must have an AI result for this test to mean anything"
    panel_task = case.tasks(TaskKind.PANEL)[0]
    reader = panel_task.assignee
    client = api_client(reader)

    before = api_client(reader).get(_url("api-reading-task", pk=panel_task.pk))
    assert before.status_code == 200 and before.json()["status"] == "pending"
    started = _start(reader, panel_task)
    assert set(started) == CASE_KEYS
    assert started["status"] == "in_progress" and started["phase"] == "final"
    assert started["signature_meaning"] == services.SIGNATURE_MEANINGS[(TaskKind.PANEL, Phase.FINAL)]
    assert [field["name"] for field in started["fields"]][:2] == ["composition", "echogenicity"]
    (read,) = started["reads"]
    assert (read["phase"], read["status"], read["revision"], read["version"]) == ("final", "draft", 0, 1)
    assert "interaction" not in read
    (image,) = started["images"]
    assert (image["frames"], image["rows"], image["columns"]) == (30, 240, 320)
    assert image["pixel_spacing_mm"] is not None
    frame_template = _url("api-reading-frame", pk=panel_task.pk, image_pk=image["id"], n=7).replace(
        "7.png", "{frame}.png"
    )
    assert image["frame_url"] == frame_template
    assert_blind(started, case)

    frame = client.get(image["frame_url"].format(frame=7))
    assert frame.status_code == 200
    assert frame["Content-Type"] == "image/png"
    assert frame["Content-Disposition"] == 'inline; filename="case-frame-7.png"'
    assert frame["Cache-Control"] == "private, max-age=3600"
    assert frame.content.startswith(PNG_SIGNATURE)
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf"):
        assert chunk not in frame.content
    assert case.participant.study_id.encode() not in frame.content
    with PILImage.open(io.BytesIO(frame.content)) as picture:
        assert picture.size == (320, 240)

    out_of_range = client.get(image["frame_url"].format(frame=30))
    assert out_of_range.status_code == 404
    assert "30" in out_of_range.json()["detail"]
    assert_blind(out_of_range.json(), case)
    other_image = client.get(_url("api-reading-frame", pk=panel_task.pk, image_pk=image["id"] + 999, n=0))
    assert other_image.status_code == 404

    assert client.get(_url("api-reading-ai", pk=panel_task.pk)).status_code == 404
    layer = client.get(_url("api-reading-ai-layer", pk=panel_task.pk, result_pk=case.ai_results[0].pk, layer="contour"))
    assert layer.status_code == 404
    assert not AiDisplay.objects.exists()


def test_session_clients_need_the_csrf_token_and_token_clients_are_answered(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(clinician)
    body = json.dumps({"phase": "final", "revision": 0, "data": {"composition": "solid"}})
    url = _url("api-reading-draft", pk=task.pk)
    refused = browser.put(url, body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    # The login page sets the CSRF cookie as any page with a form does.
    token = get_token(browser.get("/accounts/login/").wsgi_request)
    assert browser.cookies["csrftoken"].value
    saved = browser.put(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert saved.status_code == 200 and saved.json()["revision"] == 1

    key = Token.objects.create(user=clinician).key
    with_token = APIClient().get(_url("api-reading-tasks"), HTTP_AUTHORIZATION=f"Token {key}")
    assert with_token.status_code == 200 and with_token.json()["in_progress"][0]["id"] == task.pk


def test_the_worklist_refuses_roles_without_reading_tasks(users: dict[str, Any]) -> None:
    assert api_client(None).get(_url("api-reading-tasks")).status_code == 401
    for role in (Role.MONITOR, Role.COORDINATOR, Role.PATHOLOGIST, Role.TRIAL_ADMIN):
        assert api_client(users[role]).get(_url("api-reading-tasks")).status_code == 403, role


# --- Drafts and the two-tab conflict ----------------------------------------------------------


def test_a_second_tab_saving_the_same_revision_gets_409_with_the_servers_read_and_nothing_is_lost(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    started = _start(clinician, task)
    assert started["phase"] == "final" and started["reads"][0]["revision"] == 0
    url = _url("api-reading-draft", pk=task.pk)
    first_tab, second_tab = api_client(clinician), api_client(clinician)

    first = first_tab.put(url, {"phase": "final", "revision": 0, "data": {"composition": "solid"}}, format="json")
    assert first.status_code == 200, first.content
    assert (first.json()["revision"], first.json()["data"]) == (1, {"composition": "solid"})

    second = second_tab.put(url, {"phase": "final", "revision": 0, "data": {"composition": "cystic"}}, format="json")
    assert second.status_code == 409
    body = second.json()
    assert "saved elsewhere" in body["detail"]
    assert (body["current"]["revision"], body["current"]["data"]) == (1, {"composition": "solid"})
    read = Read.objects.get(task=task, phase=Phase.FINAL)
    assert (read.revision, read.data) == (1, {"composition": "solid"})

    merged = second_tab.put(
        url,
        {"phase": "final", "revision": 1, "data": {"composition": "cystic", "shape": "taller_than_wide"}},
        format="json",
    )
    assert merged.status_code == 200 and merged.json()["revision"] == 2
    assert AuditEvent.objects.filter(action="read.save_draft").count() == 2


def test_a_draft_with_malformed_fields_or_a_phase_not_open_is_refused_with_each_message(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)
    url = _url("api-reading-draft", pk=task.pk)
    client = api_client(clinician)

    malformed = client.put(url, {"phase": "later", "revision": "first", "data": ["solid"]}, format="json")
    assert malformed.status_code == 400
    assert set(malformed.json()["errors"]) == {"phase", "revision", "data"}
    assert all(malformed.json()["errors"].values())

    outline = {"image": case.images[0].pk, "frame": 0, "points": [[0, 0], [10, 0], [9999, 9999]]}
    outside = client.put(url, {"phase": "final", "revision": 0, "data": {}, "outline": outline}, format="json")
    assert outside.status_code == 400
    assert "outside the image" in outside.json()["errors"]["outline"]

    image = case.images[0]
    outline = {"image": image.pk, "frame": 3, "points": [[10, 10], [60, 12], [40, 50.555]]}
    drawn = client.put(url, {"phase": "final", "revision": 0, "data": {}, "outline": outline}, format="json")
    assert drawn.status_code == 200, drawn.content
    assert drawn.json()["outline"] == {**outline, "points": [[10, 10], [60, 12], [40, 50.55]]}
    kept = client.put(url, {"phase": "final", "revision": 1, "data": {"shape": "x"}, "outline": None}, format="json")
    assert kept.status_code == 200 and kept.json()["outline"] == drawn.json()["outline"]

    not_open = client.put(url, {"phase": "unaided", "revision": 2, "data": {}}, format="json")
    assert not_open.status_code == 409
    assert not_open.json()["current"]["phase"] == "final"
    assert Read.objects.get(task=task).revision == 2
    assert AuditEvent.objects.filter(action="read.save_draft").count() == 2


# --- Signatures ------------------------------------------------------------------------------


def test_signing_a_colposcopy_read_with_an_out_of_range_swede_item_answers_every_fields_message(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, indication="cervical", ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)

    data = {**COLPOSCOPY_READ, "swede_acetowhite": 3, "confidence": 9}
    response = _sign(clinician, task, "final", data)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"swede_acetowhite", "confidence"}
    assert "'3' is not an option for Aceto uptake" in errors["swede_acetowhite"]
    assert "1 (not at all sure) to 5" in errors["confidence"]
    read = Read.objects.get(task=task)
    assert (read.status, read.revision, read.data) == (ReadStatus.DRAFT, 0, {})


def test_signing_a_thyroid_read_whose_typed_category_contradicts_its_points_is_refused(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)

    # THYROID_READ's features add up to 4 points: TR4.
    response = _sign(clinician, task, "final", {**THYROID_READ, "tirads_category": "TR2", "largest_diameter_mm": -3})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors["tirads_category"] == "TR2 was entered but the features add up to 4 points, which is TR4."
    assert "Largest diameter must be a number of millimetres" in errors["largest_diameter_mm"]
    # A field the form does not have is named, not ignored.
    unknown = _sign(clinician, task, "final", {**THYROID_READ, "category": "TR2"})
    assert unknown.status_code == 400
    assert unknown.json()["errors"] == {"category": "The thyroid read has no field called 'category'."}
    assert Read.objects.get(task=task).status == ReadStatus.DRAFT

    signed = _sign(clinician, task, "final", {**THYROID_READ, "tirads_category": "TR4"})
    assert signed.status_code == 200, signed.content
    assert (signed.json()["values"]["category"], signed.json()["values"]["fna"]) == ("TR4", "fna")


def test_a_wrong_password_leaves_the_read_a_draft(make_case: Callable[..., Case], users: dict[str, Any]) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)

    response = _sign(clinician, task, "final", valid_read("thyroid"), password="not-my-password")
    assert response.status_code == 400
    assert response.json()["errors"] == {"password": "The password is not correct; the read was not signed."}
    read = Read.objects.get(task=task)
    assert (read.status, read.signed_at, read.revision, read.data) == (ReadStatus.DRAFT, None, 0, {})
    assert not AuditEvent.objects.filter(action="read.sign").exists()
    missing = api_client(clinician).post(
        _url("api-reading-sign", pk=task.pk), {"phase": "final", "revision": 0, "data": {}}, format="json"
    )
    assert missing.status_code == 400 and set(missing.json()["errors"]) == {"password"}


# --- The AI second opinion ---------------------------------------------------------------------


def test_the_ai_second_opinion_opens_after_the_unaided_read_and_each_display_is_recorded(
    ai_case: Case, users: dict[str, Any]
) -> None:
    task = ai_case.task()
    clinician = users[Role.CLINICIAN_READER]
    client = api_client(clinician)
    ai_url = _url("api-reading-ai", pk=task.pk)
    # Not taken yet: nobody's read, so no AI either.
    assert client.get(ai_url).status_code == 404

    started = _start(clinician, task)
    assert set(started) == CLINICAL_CASE_KEYS
    assert (started["sequential"], started["arm"], started["ai_available"]) == (True, "AI-assisted", False)
    assert started["phase"] == "unaided"
    assert started["signature_meaning"] == services.SIGNATURE_MEANINGS[(TaskKind.CLINICAL, Phase.UNAIDED)]
    not_yet = client.get(ai_url)
    assert not_yet.status_code == 403
    assert "once your unaided read is signed" in not_yet.json()["detail"]
    result = ai_case.ai_results[0]
    contour_url = _url("api-reading-ai-layer", pk=task.pk, result_pk=result.pk, layer="contour")
    assert client.get(contour_url).status_code == 403
    assert _displays(task) == (0, 0)

    unaided = _sign(clinician, task, "unaided", valid_read("thyroid"))
    assert unaided.status_code == 200, unaided.content
    assert (unaided.json()["status"], unaided.json()["next_phase"]) == ("signed", "final")
    case = client.get(_url("api-reading-task", pk=task.pk)).json()
    assert (case["phase"], case["ai_available"]) == ("final", True)

    opinion = client.get(ai_url)
    assert opinion.status_code == 200
    assert opinion["Cache-Control"] == "no-store"
    (shown,) = opinion.json()["results"]
    assert (shown["id"], shown["image"]) == (result.pk, ai_case.images[0].pk)
    assert shown["model"]["version"] == result.model_version.version
    assert shown["has_mask"] and shown["has_heatmap"]
    assert shown["contour_url"] == contour_url
    assert _displays(task) == (1, 1)
    client.get(ai_url)
    assert _displays(task) == (2, 2)

    image = ai_case.images[0]
    for layer, url in (("contour", shown["contour_url"]), ("heatmap", shown["heatmap_url"])):
        for _ in range(2):
            response = client.get(url)
            assert response.status_code == 200
            assert response["Cache-Control"] == "no-store"
            with PILImage.open(io.BytesIO(response.content)) as picture:
                assert (picture.mode, picture.size) == ("RGBA", (image.columns, image.rows))
        assert AiDisplay.objects.filter(task=task, what=layer).count() == 2
    assert _displays(task) == (6, 6)
    assert set(AiDisplay.objects.values_list("what", flat=True)) == {"suggestion", "contour", "heatmap"}
    unknown_layer = client.get(_url("api-reading-ai-layer", pk=task.pk, result_pk=result.pk, layer="mask"))
    assert unknown_layer.status_code == 404
    assert _displays(task) == (6, 6)

    final = _sign(clinician, task, "final", {**valid_read("thyroid"), "confidence": 5}, revision=0)
    assert final.status_code == 200, final.content
    assert final.json()["next_phase"] is None
    assert final.json()["interaction"]["ai_viewed"] is True
    assert final.json()["interaction"]["changed_fields"] == {"confidence": [4, 5]}


def test_the_ai_second_opinion_does_not_exist_in_the_specialist_only_arm(
    specialist_case: Case, users: dict[str, Any]
) -> None:
    task = specialist_case.task()
    clinician = users[Role.CLINICIAN_READER]
    client = api_client(clinician)
    result = specialist_case.ai_results[0]
    urls = [
        _url("api-reading-ai", pk=task.pk),
        _url("api-reading-ai-layer", pk=task.pk, result_pk=result.pk, layer="contour"),
        _url("api-reading-ai-layer", pk=task.pk, result_pk=result.pk, layer="heatmap"),
    ]
    started = _start(clinician, task)
    assert (started["sequential"], started["arm"], started["ai_available"]) == (False, "Specialist only", False)
    assert [client.get(url).status_code for url in urls] == [404, 404, 404]

    signed = _sign(clinician, task, "final", valid_read("thyroid"))
    assert signed.status_code == 200 and signed.json()["next_phase"] is None
    assert "interaction" not in signed.json()
    assert [client.get(url).status_code for url in urls] == [404, 404, 404]
    assert _displays(task) == (0, 0)


# --- Corrections -----------------------------------------------------------------------------


def test_a_correction_needs_a_reason_and_keeps_the_old_version(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)
    signed = _sign(clinician, task, "final", valid_read("thyroid"))
    assert signed.status_code == 200
    url = _url("api-reading-correct", pk=task.pk, read_pk=signed.json()["id"])
    client = api_client(clinician)
    corrected_data = {**valid_read("thyroid"), "largest_diameter_mm": 12}

    no_reason = client.post(url, {"data": corrected_data, "reason": "  ", "password": PASSWORD}, format="json")
    assert no_reason.status_code == 400
    assert no_reason.json()["errors"] == {"reason": "A reason is required to correct a signed read."}
    wrong_password = client.post(
        url, {"data": corrected_data, "reason": "Measured again", "password": "guess"}, format="json"
    )
    assert wrong_password.status_code == 400 and set(wrong_password.json()["errors"]) == {"password"}
    assert Read.objects.filter(task=task).count() == 1

    corrected = client.post(
        url, {"data": corrected_data, "reason": "Measured the wrong nodule", "password": PASSWORD}, format="json"
    )
    assert corrected.status_code == 201, corrected.content
    body = corrected.json()
    assert (body["version"], body["current"], body["correction_reason"]) == (2, True, "Measured the wrong nodule")
    assert (body["values"]["largest_diameter_mm"], body["values"]["fna"]) == (12.0, "follow-up")
    old = Read.objects.get(pk=signed.json()["id"])
    assert (old.current, old.status, old.values["largest_diameter_mm"]) == (False, ReadStatus.SIGNED, 18.0)
    versions = client.get(_url("api-reading-task", pk=task.pk)).json()["reads"]
    assert [(read["version"], read["current"]) for read in versions] == [(1, False), (2, True)]

    again = client.post(url, {"data": corrected_data, "reason": "Again", "password": PASSWORD}, format="json")
    assert again.status_code == 409
    assert "already been corrected" in again.json()["detail"]


# --- Another reader's task, another site -----------------------------------------------------


def test_a_reader_opening_another_readers_task_gets_403_and_a_task_at_another_site_404(
    make_case: Callable[..., Case],
    panel: list[Any],
    users: dict[str, Any],
    make_user: Callable[..., Any],
    site_a: Any,
    site_b: Any,
) -> None:
    case = make_case(Arm.SPECIALIST_ONLY, ai=False)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    _start(clinician, task)
    colleague = make_user("clinician-2", Role.CLINICIAN_READER, trial=task.trial, site=site_a)
    elsewhere = make_user("clinician-b", Role.CLINICIAN_READER, trial=task.trial, site=site_b)
    read = Read.objects.get(task=task)
    draft = {"phase": "final", "revision": 0, "data": {"composition": "solid"}}
    sign = {**draft, "data": valid_read("thyroid"), "password": PASSWORD}
    correct = {"data": valid_read("thyroid"), "reason": "Mine now", "password": PASSWORD}

    for user, expected in ((colleague, 403), (elsewhere, 404)):
        client = api_client(user)
        answers = [
            client.get(_url("api-reading-task", pk=task.pk)),
            client.post(_url("api-reading-task-start", pk=task.pk)),
            client.put(_url("api-reading-draft", pk=task.pk), draft, format="json"),
            client.post(_url("api-reading-sign", pk=task.pk), sign, format="json"),
            client.post(_url("api-reading-correct", pk=task.pk, read_pk=read.pk), correct, format="json"),
            client.get(_url("api-reading-frame", pk=task.pk, image_pk=case.images[0].pk, n=0)),
            client.get(_url("api-reading-ai", pk=task.pk)),
        ]
        assert [answer.status_code for answer in answers] == [expected] * len(answers), user
        assert not any(case.participant.study_id in answer.content.decode() for answer in answers)
        worklist = client.get(_url("api-reading-tasks")).json()
        assert task.pk not in [row["id"] for group in ("pending", "in_progress") for row in worklist[group]]
    read.refresh_from_db()
    assert (read.reader, read.revision, read.status) == (clinician, 0, ReadStatus.DRAFT)

    panel_task = case.tasks(TaskKind.PANEL)[0]
    other_reader = next(reader for reader in panel if reader != panel_task.assignee)
    refused = api_client(other_reader).get(_url("api-reading-task", pk=panel_task.pk))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This reading task is assigned to another reader."
    assert api_client(users[Role.BLINDED_READER]).get(_url("api-reading-task", pk=task.pk)).status_code == 404
    assert api_client(clinician).get(_url("api-reading-task", pk=panel_task.pk)).status_code == 404


# --- Oversight ----------------------------------------------------------------------------------


def test_monitors_and_trial_admins_oversee_tasks_signed_reads_and_ai_displays_without_ai_payloads(
    panel: list[Any], ai_case: Case, users: dict[str, Any], make_user: Callable[..., Any], site_b: Any
) -> None:
    task = ai_case.task()
    clinician = users[Role.CLINICIAN_READER]
    services.reading_task_start(actor=actor_for(clinician), task=task)
    services.read_sign(
        actor=actor_for(clinician),
        task=task,
        phase="unaided",
        data=valid_read("thyroid"),
        revision=0,
        password=PASSWORD,
    )
    assert api_client(clinician).get(_url("api-reading-ai", pk=task.pk)).status_code == 200

    for role in (Role.MONITOR, Role.TRIAL_ADMIN):
        client = api_client(users[role])
        listing = client.get(_url("api-reading-oversight"))
        assert listing.status_code == 200
        rows = {row["id"]: row for row in listing.json()["results"]}
        assert set(rows) == {t.pk for t in ai_case.tasks(TaskKind.CLINICAL) + ai_case.tasks(TaskKind.PANEL)}
        row = rows[task.pk]
        assert (row["study_id"], row["site"], row["kind"], row["status"], row["assignee"]) == (
            ai_case.participant.study_id,
            "C01",
            "clinical",
            "in_progress",
            clinician.username,
        )
        panel_rows = client.get(_url("api-reading-oversight"), {"kind": "panel", "status": "pending"}).json()
        assert {r["kind"] for r in panel_rows["results"]} == {"panel"} and panel_rows["count"] == 2
        bad = client.get(_url("api-reading-oversight"), {"status": "lost"})
        assert bad.status_code == 400 and set(bad.json()["errors"]) == {"status"}

        detail = client.get(_url("api-reading-oversight-task", pk=task.pk))
        assert detail.status_code == 200
        body = detail.json()
        (read,) = body["reads"]
        assert (read["phase"], read["version"], read["reader"], read["values"]["category"]) == (
            "unaided",
            1,
            clinician.username,
            "TR4",
        )
        (display,) = body["ai_displays"]
        assert (display["what"], display["reader"]) == ("suggestion", clinician.username)
        text = json.dumps(body)
        for ai_payload in ("category_probability", "measurements", "interaction", "contour_url", "model"):
            assert f'"{ai_payload}"' not in text

    monitor_b = make_user("monitor-b", Role.MONITOR, trial=task.trial, site=site_b)
    assert api_client(monitor_b).get(_url("api-reading-oversight")).json()["count"] == 0
    assert api_client(monitor_b).get(_url("api-reading-oversight-task", pk=task.pk)).status_code == 404
    for role in (Role.CLINICIAN_READER, Role.BLINDED_READER, Role.COORDINATOR, Role.PATHOLOGIST):
        client = api_client(users[role])
        assert client.get(_url("api-reading-oversight")).status_code == 403, role
        assert client.get(_url("api-reading-oversight-task", pk=task.pk)).status_code == 403, role
    assert api_client(None).get(_url("api-reading-oversight")).status_code == 401


# --- The reading policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"panel_fraction": 1.5}, "panel_fraction", "Panel fraction must be a number from 0 to 1."),
        ({"panel_fraction": True}, "panel_fraction", "A valid number is required."),
        ({"washout_days": 400}, "washout_days", "Washout days must be a whole number from 0 to 365."),
        ({"panel_readers_per_case": 2.5}, "panel_readers_per_case", "A valid integer is required."),
        ({"adjudication_rule": "sometimes"}, "adjudication_rule", '"sometimes" is not a valid choice.'),
        ({"seed": "0" * 64}, "seed", "'seed' is not a reading policy setting"),
    ],
)
def test_a_bad_reading_policy_change_is_refused_with_a_clear_message_and_changes_nothing(
    users: dict[str, Any], recruiting: Any, change: dict[str, Any], field: str, message: str
) -> None:
    admin = api_client(users[Role.TRIAL_ADMIN])
    url = _url("api-reading-policy", pk=recruiting.pk)
    before = admin.get(url).json()
    response = admin.patch(url, {**change, "washout_days": change.get("washout_days", 7)}, format="json")
    assert response.status_code == 400
    assert message in response.json()["errors"][field]
    assert admin.get(url).json() == before
    assert not AuditEvent.objects.filter(action="reading_policy.change").exists()


def test_a_trial_admin_reads_and_changes_the_reading_policy_without_ever_seeing_its_seed(
    users: dict[str, Any], recruiting: Any
) -> None:
    admin = api_client(users[Role.TRIAL_ADMIN])
    url = _url("api-reading-policy", pk=recruiting.pk)
    shown = admin.get(url)
    assert shown.status_code == 200
    policy = ReadingPolicy.objects.get(trial=recruiting)
    assert set(shown.json()) == {"trial", *services.POLICY_FIELDS, "updated_at"}
    assert policy.seed not in shown.content.decode()

    changed = admin.patch(url, {"panel_fraction": 0.5, "washout_days": 14}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["panel_fraction"], changed.json()["washout_days"]) == (0.5, 14)
    assert "seed" not in changed.json() and policy.seed not in changed.content.decode()
    policy.refresh_from_db()
    assert (policy.panel_fraction, policy.washout_days) == (0.5, 14)
    event = AuditEvent.objects.get(action="reading_policy.change")
    assert policy.seed not in json.dumps(event.after)
    unchanged = admin.patch(url, {"washout_days": 14}, format="json")
    assert unchanged.status_code == 400 and "Nothing to change" in unchanged.json()["detail"]
    assert admin.get(_url("api-reading-policy", pk=recruiting.pk + 1000)).status_code == 404

    for role in (Role.MONITOR, Role.COORDINATOR, Role.CLINICIAN_READER, Role.BLINDED_READER, Role.DSMB):
        client = api_client(users[role])
        assert client.get(url).status_code == 403, role
        assert client.patch(url, {"washout_days": 1}, format="json").status_code == 403, role
    assert api_client(None).get(url).status_code == 401
    policy.refresh_from_db()
    assert policy.washout_days == 14


# --- The schema ---------------------------------------------------------------------------------


def test_the_openapi_schema_describes_the_reading_endpoints_without_warnings(
    users: dict[str, Any], tmp_path: Any
) -> None:
    paths = api_client(users[Role.TRIAL_ADMIN]).get("/api/schema/", {"format": "json"}).json()["paths"]
    for path, method in [
        ("/api/v1/readings/tasks/", "get"),
        ("/api/v1/readings/tasks/{id}/", "get"),
        ("/api/v1/readings/tasks/{id}/start/", "post"),
        ("/api/v1/readings/tasks/{id}/draft/", "put"),
        ("/api/v1/readings/tasks/{id}/sign/", "post"),
        ("/api/v1/readings/tasks/{id}/reads/{read_pk}/correct/", "post"),
        ("/api/v1/readings/tasks/{id}/images/{image_pk}/frames/{n}.png", "get"),
        ("/api/v1/readings/tasks/{id}/ai/", "get"),
        ("/api/v1/readings/tasks/{id}/ai/{result_pk}/{layer}.png", "get"),
        ("/api/v1/readings/oversight/tasks/", "get"),
        ("/api/v1/readings/oversight/tasks/{id}/", "get"),
        ("/api/v1/trials/{id}/reading-policy/", "patch"),
    ]:
        assert method in paths[path], path
    assert "409" in paths["/api/v1/readings/tasks/{id}/draft/"]["put"]["responses"]
    # --fail-on-warn raises on any warning (an untyped parameter, an enum name clash).
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
