"""The reading pages: who may open each (the readers their worklist and
their cases, monitors and trial admins the oversight, the trial admin the
policy), the case page's form without JavaScript (start, save a draft, sign,
errors next to each field, a conflict between two tabs), the correction of a
signed read, and what the pages of the blinded panel and of the
specialist-only arm never contain."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from randomization.models import Arm
from readings.models import AiDisplay, Phase, Read, ReadingPolicy, ReadStatus, TaskKind, TaskStatus
from tests.conftest import PASSWORD, login
from tests.reading_fixtures import Case, valid_read
from trial.models import Role, Site, Trial

READERS = frozenset({Role.CLINICIAN_READER, Role.BLINDED_READER})
OVERSEERS = frozenset({Role.MONITOR, Role.TRIAL_ADMIN})
# What a blinded panel page never carries (besides the study id).
BLINDED_FORBIDDEN = ("C01", "Site A", "AI-assisted", "Specialist only", "AI second opinion")
_CSRF = re.compile(r'(name="csrfmiddlewaretoken" value="|data-csrf=")[^"]*"')


def html(response: Any) -> str:
    """The page without its CSRF tokens (random text that could hold any
    three letters)."""
    return _CSRF.sub(r'\1"', response.content.decode())


def post_form(user: Any, task_pk: int, action: str, data: dict[str, Any], **extra: Any) -> Any:
    """Post the case page's form as a browser without JavaScript would:
    every value as text, booleans as the yes/no select sends them."""
    fields: dict[str, Any] = {"action": action, **extra}
    for name, value in data.items():
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, list):
            fields[name] = [str(item) for item in value]
        else:
            fields[name] = str(value)
    return login(user).post(reverse("readings:task", args=[task_pk]), fields)


def start(user: Any, task_pk: int) -> None:
    response = login(user).post(reverse("readings:task", args=[task_pk]), {"action": "start"})
    assert response.status_code == 302, response.content.decode()[:2000]


def current(task_pk: int, phase: str = Phase.FINAL) -> Read:
    return Read.objects.get(task_id=task_pk, phase=phase, current=True)


def sign(user: Any, task_pk: int, data: dict[str, Any], phase: str = Phase.FINAL) -> Any:
    return post_form(
        user, task_pk, "sign", data, phase=phase, revision=current(task_pk, phase).revision, password=PASSWORD
    )


def field_error(page: str, name: str) -> str:
    match = re.search(rf'<div class="field-error" id="error-{name}" role="alert">(.*?)</div>', page, re.S)
    assert match is not None, f"no error element for {name}"
    return match.group(1).strip()


@pytest.fixture
def clinician_b(recruiting: Trial, site_b: Site, make_user: Any) -> Any:
    return make_user("clinician-b", Role.CLINICIAN_READER, trial=recruiting, site=site_b)


@pytest.fixture
def monitor_b(recruiting: Trial, site_b: Site, make_user: Any) -> Any:
    return make_user("monitor-b", Role.MONITOR, trial=recruiting, site=site_b)


@pytest.fixture
def case(panel: list[Any], make_case: Any) -> Case:
    """A specialist-only thyroid case without AI results (cheap), with its
    panel tasks (made for two of the three panel readers)."""
    return make_case(Arm.SPECIALIST_ONLY, ai=False)


# --- Who may open which page ----------------------------------------------------------------


def test_the_worklist_is_for_readers_only(users: dict[str, Any], case: Case) -> None:
    for role, user in users.items():
        response = login(user).get(reverse("readings:worklist"))
        assert response.status_code == (200 if role in READERS else 403), role
    page = html(login(users[Role.CLINICIAN_READER]).get(reverse("readings:worklist")))
    assert case.participant.study_id in page and "Specialist only" in page
    assert reverse("readings:task", args=[case.task().pk]) in page


def test_the_case_page_answers_its_reader_and_refuses_everyone_else(
    users: dict[str, Any], panel: list[Any], case: Case, clinician_b: Any
) -> None:
    clinical = case.task()
    panel_task = case.tasks(TaskKind.PANEL)[0]
    unassigned = next(reader for reader in panel if reader.pk != panel_task.assignee_id)
    clinical_url = reverse("readings:task", args=[clinical.pk])
    panel_url = reverse("readings:task", args=[panel_task.pk])

    for role, user in users.items():
        if role in READERS:
            continue
        for url in (clinical_url, panel_url):
            assert login(user).get(url).status_code == 403, (role, url)
    assert login(users[Role.CLINICIAN_READER]).get(clinical_url).status_code == 200
    assert login(clinician_b).get(clinical_url).status_code == 404  # another site's case
    assert login(users[Role.CLINICIAN_READER]).get(panel_url).status_code == 404
    assert login(panel_task.assignee).get(panel_url).status_code == 200
    assert login(unassigned).get(panel_url).status_code == 403  # another panel reader's task
    assert login(panel_task.assignee).get(clinical_url).status_code == 404
    assert login(users[Role.CLINICIAN_READER]).get(reverse("readings:task", args=[999999])).status_code == 404
    # Nobody but the reader can post to the page either.
    response = login(users[Role.COORDINATOR]).post(clinical_url, {"action": "start"})
    assert response.status_code == 403
    clinical.refresh_from_db()
    assert clinical.status == TaskStatus.PENDING and clinical.assignee is None


def test_the_correction_page_is_the_signing_readers_only(users: dict[str, Any], case: Case, clinician_b: Any) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    start(clinician, task.pk)
    assert sign(clinician, task.pk, valid_read("thyroid")).status_code == 302
    read = current(task.pk)
    url = reverse("readings:correct", args=[task.pk, read.pk])
    assert login(clinician).get(url).status_code == 200
    assert login(clinician_b).get(url).status_code == 404
    for role in (Role.COORDINATOR, Role.MONITOR, Role.TRIAL_ADMIN, Role.PATHOLOGIST, Role.DSMB):
        assert login(users[role]).get(url).status_code == 403, role
    panel_task = case.tasks(TaskKind.PANEL)[0]
    # A read of another task, under this task's address: no such read.
    assert login(panel_task.assignee).get(reverse("readings:correct", args=[panel_task.pk, read.pk])).status_code == 404


def test_the_oversight_pages_are_for_monitors_and_trial_admins(
    users: dict[str, Any], case: Case, monitor_b: Any
) -> None:
    task = case.task()
    for role, user in users.items():
        expected = 200 if role in OVERSEERS else 403
        assert login(user).get(reverse("readings:oversight")).status_code == expected, role
        assert login(user).get(reverse("readings:oversight_task", args=[task.pk])).status_code == expected, role
    assert login(monitor_b).get(reverse("readings:oversight_task", args=[task.pk])).status_code == 404
    page = html(login(users[Role.MONITOR]).get(reverse("readings:oversight")))
    assert case.participant.study_id in page and "Blinded panel read" in page
    assert reverse("readings:oversight_task", args=[task.pk]) in page
    filtered = login(users[Role.MONITOR]).get(reverse("readings:oversight"), {"kind": "clinical"})
    assert filtered.status_code == 200
    assert reverse("readings:oversight_task", args=[case.tasks(TaskKind.PANEL)[0].pk]) not in html(filtered)
    assert login(users[Role.MONITOR]).get(reverse("readings:oversight"), {"kind": "nonsense"}).status_code == 400


def test_the_reading_policy_page_is_the_trial_admins(users: dict[str, Any], recruiting: Trial) -> None:
    url = reverse("readings:policy", args=[recruiting.pk])
    for role, user in users.items():
        assert login(user).get(url).status_code == (200 if role == Role.TRIAL_ADMIN else 403), role
    admin = login(users[Role.TRIAL_ADMIN])
    assert admin.get(reverse("readings:policy", args=[999999])).status_code == 404
    assert url in html(admin.get(reverse("readings:oversight")))
    assert "seed" not in html(admin.get(url))


def test_the_menu_links_the_reading_pages_by_role(users: dict[str, Any]) -> None:
    worklist, oversight = reverse("readings:worklist"), reverse("readings:oversight")
    for role, user in users.items():
        page = html(login(user).get(reverse("trial:dashboard")))
        assert (f'href="{worklist}"' in page) == (role in READERS), role
        assert (f'href="{oversight}"' in page) == (role in OVERSEERS), role


# --- The case page without JavaScript ---------------------------------------------------------


def test_a_read_is_started_saved_and_signed_by_posting_the_form(users: dict[str, Any], case: Case) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    url = reverse("readings:task", args=[task.pk])
    pending = html(login(clinician).get(url))
    assert 'value="start"' in pending and 'id="read-form"' not in pending

    start(clinician, task.pk)
    page = html(login(clinician).get(url))
    assert 'id="read-form"' in page and 'name="revision" value="0"' in page
    assert f'data-task-api="{reverse("api-reading-task", args=[task.pk])}"' in page
    assert f'data-draft-api="{reverse("api-reading-draft", args=[task.pk])}"' in page
    assert f'data-sign-api="{reverse("api-reading-sign", args=[task.pk])}"' in page
    assert 'id="signature-meaning"' in page and 'id="save-status"' in page and 'id="computed"' in page
    assert "I confirm this is my final clinical reading of these images." in page

    draft = {"composition": "solid", "echogenicity": "hypoechoic", "echogenic_foci": ["none"], "note": "first look"}
    saved = post_form(clinician, task.pk, "save", draft, phase=Phase.FINAL, revision=0, outline="{}")
    assert saved.status_code == 302
    read = current(task.pk)
    assert read.revision == 1 and read.status == ReadStatus.DRAFT
    assert read.data == {
        "composition": "solid",
        "echogenicity": "hypoechoic",
        "echogenic_foci": ["none"],
        "note": "first look",
    }
    page = html(login(clinician).get(url))
    assert 'name="revision" value="1"' in page
    assert '<option value="solid" data-points="2" selected>' in page
    assert "first look</textarea>" in page

    full = valid_read("thyroid")
    wrong = post_form(clinician, task.pk, "sign", full, phase=Phase.FINAL, revision=1, password="not-my-password")
    assert wrong.status_code == 400
    assert "The password is not correct" in field_error(html(wrong), "password")
    read.refresh_from_db()
    assert read.status == ReadStatus.DRAFT and read.revision == 1 and read.data["note"] == "first look"
    assert 'value="wider_than_tall" data-points="0" selected' in html(wrong)  # the entries are kept

    signed = post_form(clinician, task.pk, "sign", full, phase=Phase.FINAL, revision=1, password=PASSWORD)
    assert signed.status_code == 302
    read.refresh_from_db()
    task.refresh_from_db()
    assert read.status == ReadStatus.SIGNED and read.values["category"] == "TR4" and read.values["fna"] == "fna"
    assert task.status == TaskStatus.DONE
    done = html(login(clinician).get(url))
    assert 'id="read-form"' not in done and "This task is done" in done
    assert reverse("readings:correct", args=[task.pk, read.pk]) in done and read.signature_meaning in done


def test_each_field_shows_its_own_error_and_nothing_is_signed(users: dict[str, Any], case: Case) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    start(clinician, task.pk)
    data = {**valid_read("thyroid"), "tirads_category": "TR2", "confidence": 9, "largest_diameter_mm": -3}
    del data["cancer_suspected"]
    response = sign(clinician, task.pk, data)
    assert response.status_code == 400
    page = html(response)
    assert "TR2 was entered but the features add up to 4 points, which is TR4." in field_error(page, "tirads_category")
    assert "Confidence must be a whole number from 1" in field_error(page, "confidence")
    assert "Largest diameter must be a number of millimetres" in field_error(page, "largest_diameter_mm")
    assert field_error(page, "cancer_suspected") == "Cancer suspected is required."
    assert field_error(page, "composition") == ""
    assert 'id="form-summary"' in page and '<a href="#field-confidence">Confidence</a>' in page
    assert 'name="confidence" value="9"' in page
    read = current(task.pk)
    assert read.status == ReadStatus.DRAFT and read.revision == 0 and read.data == {}
    task.refresh_from_db()
    assert task.status == TaskStatus.IN_PROGRESS


def test_a_stale_revision_gets_a_conflict_page_that_keeps_the_entries(users: dict[str, Any], case: Case) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    start(clinician, task.pk)
    first = post_form(clinician, task.pk, "save", {"note": "saved in tab one"}, phase=Phase.FINAL, revision=0)
    assert first.status_code == 302
    stale = post_form(
        clinician, task.pk, "save", {"note": "typed in tab two", "confidence": 2}, phase=Phase.FINAL, revision=0
    )
    assert stale.status_code == 409
    page = html(stale)
    assert "saved elsewhere" in page and "typed in tab two</textarea>" in page and 'value="2"' in page
    assert "saved in tab one" in page  # what the other tab saved, to compare
    assert 'name="revision" value="1"' in page  # saving again is a deliberate choice
    read = current(task.pk)
    assert read.revision == 1 and read.data == {"note": "saved in tab one"}
    again = post_form(clinician, task.pk, "save", {"note": "typed in tab two"}, phase=Phase.FINAL, revision=1)
    assert again.status_code == 302
    read.refresh_from_db()
    assert read.revision == 2 and read.data == {"note": "typed in tab two"}


def test_a_bad_request_to_the_case_page_is_answered_with_a_message(users: dict[str, Any], case: Case) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    start(clinician, task.pk)
    no_revision = post_form(clinician, task.pk, "save", {"note": "x"}, phase=Phase.FINAL)
    assert no_revision.status_code == 400 and "did not send the read&#x27;s revision" in html(no_revision)
    bad_outline = post_form(clinician, task.pk, "save", {"note": "x"}, phase=Phase.FINAL, revision=0, outline="{")
    assert bad_outline.status_code == 400 and "outline sent by the page could not be read" in html(bad_outline)
    outside = post_form(
        clinician,
        task.pk,
        "save",
        {"note": "x"},
        phase=Phase.FINAL,
        revision=0,
        outline=json.dumps({"image": case.images[0].pk, "frame": 0, "points": [[1, 1], [2, 2], [99999, 3]]}),
    )
    assert outside.status_code == 400 and "lies outside the image" in html(outside)
    unknown = post_form(clinician, task.pk, "dance", {}, phase=Phase.FINAL, revision=0)
    assert unknown.status_code == 400
    assert current(task.pk).revision == 0


def test_a_signed_read_is_corrected_only_with_a_reason(users: dict[str, Any], case: Case) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    start(clinician, task.pk)
    assert sign(clinician, task.pk, valid_read("thyroid")).status_code == 302
    first = current(task.pk)
    url = reverse("readings:correct", args=[task.pk, first.pk])
    page = html(login(clinician).get(url))
    assert '<option value="hypoechoic" data-points="2" selected>' in page  # prefilled with the read's data
    assert "I confirm this corrected reading replaces my earlier signed reading" in page

    corrected = {**valid_read("thyroid"), "echogenicity": "very_hypoechoic"}
    client = login(clinician)
    fields = {name: str(value).lower() if isinstance(value, bool) else value for name, value in corrected.items()}
    no_reason = client.post(url, {**fields, "reason": "  ", "password": PASSWORD})
    assert no_reason.status_code == 400
    assert "A reason is required" in field_error(html(no_reason), "reason")
    assert 'value="very_hypoechoic" data-points="3" selected' in html(no_reason)
    wrong = client.post(url, {**fields, "reason": "Misread the echogenicity", "password": "nope"})
    assert wrong.status_code == 400 and "The password is not correct" in field_error(html(wrong), "password")
    assert Read.objects.filter(task=task).count() == 1

    done = client.post(url, {**fields, "reason": "Misread the echogenicity", "password": PASSWORD})
    assert done.status_code == 302
    first.refresh_from_db()
    second = current(task.pk)
    assert not first.current and first.values["points"] == 4
    assert second.version == 2 and second.supersedes_id == first.pk and second.values["points"] == 5
    assert second.correction_reason == "Misread the echogenicity"
    page = html(login(clinician).get(reverse("readings:task", args=[task.pk])))
    assert "Misread the echogenicity" in page and "v2" in page and "(corrected since)" in page


# --- Blinding on the pages ------------------------------------------------------------------------


def test_the_panel_pages_carry_no_study_id_site_arm_or_ai(
    users: dict[str, Any], panel: list[Any], ai_case: Case
) -> None:
    task = ai_case.tasks(TaskKind.PANEL)[0]
    reader = task.assignee
    client = login(reader)
    url = reverse("readings:task", args=[task.pk])
    pages = {"worklist": html(client.get(reverse("readings:worklist"))), "pending": html(client.get(url))}
    start(reader, task.pk)
    pages["in progress"] = html(client.get(url))
    assert 'id="read-form"' in pages["in progress"] and 'id="viewer"' in pages["in progress"]
    refused = sign(reader, task.pk, {**valid_read("thyroid"), "confidence": 0})
    assert refused.status_code == 400
    pages["refused"] = html(refused)
    assert sign(reader, task.pk, valid_read("thyroid")).status_code == 302
    pages["done"] = html(client.get(url))
    read = current(task.pk)
    pages["correct"] = html(client.get(reverse("readings:correct", args=[task.pk, read.pk])))
    for name, page in pages.items():
        for text in (ai_case.participant.study_id, *BLINDED_FORBIDDEN):
            assert text not in page, f"the {name} page carries {text!r}"
        assert 'id="ai-panel"' not in page and "data-ai-api" not in page, name
    assert f"Case {task.order_key[:6].upper()}" in pages["worklist"]


def test_the_specialist_only_case_page_has_no_ai_element_or_wording(
    users: dict[str, Any], specialist_case: Case
) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = specialist_case.task()
    url = reverse("readings:task", args=[task.pk])
    start(clinician, task.pk)
    pages = [html(login(clinician).get(url))]
    assert 'id="read-form"' in pages[0] and "Specialist only" in pages[0]
    assert sign(clinician, task.pk, valid_read("thyroid")).status_code == 302
    pages.append(html(login(clinician).get(url)))
    for page in pages:
        assert 'id="ai-panel"' not in page and "data-ai-api" not in page
        assert not re.search(r"\bAI\b", page), re.search(r".{60}\bAI\b.{60}", page, re.S)
    assert not AiDisplay.objects.filter(task=task).exists()


def test_the_ai_arm_page_offers_the_ai_only_after_the_unaided_read_is_signed(
    users: dict[str, Any], ai_case: Case
) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = ai_case.task()
    url = reverse("readings:task", args=[task.pk])
    ai_api = reverse("api-reading-ai", args=[task.pk])
    start(clinician, task.pk)
    unaided = html(login(clinician).get(url))
    assert 'data-phase="unaided"' in unaided and 'name="phase" value="unaided"' in unaided
    assert "data-ai-api" not in unaided and 'id="ai-panel"' not in unaided and ai_api not in unaided
    assert "made before seeing the AI second opinion" in unaided  # the meaning of this signature

    assert sign(clinician, task.pk, valid_read("thyroid"), phase=Phase.UNAIDED).status_code == 302
    final = html(login(clinician).get(url))
    assert 'data-phase="final"' in final
    assert f'data-ai-api="{ai_api}"' in final and 'id="ai-panel"' in final
    # Rendering the page shows nothing of the AI by itself: the viewer asks for it.
    assert not AiDisplay.objects.filter(task=task).exists()


# --- Oversight and the policy ---------------------------------------------------------------------


def test_oversight_shows_every_signed_version_with_its_reason(users: dict[str, Any], case: Case) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    start(clinician, task.pk)
    assert sign(clinician, task.pk, valid_read("thyroid")).status_code == 302
    first = current(task.pk)
    fields = {**valid_read("thyroid"), "cancer_suspected": "false", "confidence": 2, "echogenic_foci": "none"}
    response = login(clinician).post(
        reverse("readings:correct", args=[task.pk, first.pk]),
        {**fields, "reason": "Confidence entered wrongly", "password": PASSWORD},
    )
    assert response.status_code == 302
    page = html(login(users[Role.MONITOR]).get(reverse("readings:oversight_task", args=[task.pk])))
    assert case.participant.study_id in page and "Site A" in page
    assert "v1" in page and "v2" in page and "Confidence entered wrongly" in page
    assert clinician.get_username() in page and "Never shown." in page


def test_the_trial_admin_changes_the_reading_policy(users: dict[str, Any], recruiting: Trial) -> None:
    admin = login(users[Role.TRIAL_ADMIN])
    url = reverse("readings:policy", args=[recruiting.pk])
    page = html(admin.get(url))
    assert 'name="panel_fraction" value="1.0"' in page
    values = {
        "panel_fraction": "0.5",
        "panel_readers_per_case": "3",
        "reread_fraction": "0.2",
        "washout_days": "14",
        "adjudication_rule": "category",
        "clinical_due_days": "7",
        "panel_due_days": "28",
    }
    refused = admin.post(url, {**values, "panel_fraction": "1.5"})
    assert refused.status_code == 400 and "must be a number from 0 to 1" in html(refused)
    assert ReadingPolicy.objects.get(trial=recruiting).panel_fraction == 1.0
    not_a_number = admin.post(url, {**values, "washout_days": "two weeks"})
    assert not_a_number.status_code == 400
    assert admin.post(url, values).status_code == 302
    policy = ReadingPolicy.objects.get(trial=recruiting)
    assert (policy.panel_fraction, policy.panel_readers_per_case, policy.washout_days) == (0.5, 3, 14)
    assert policy.adjudication_rule == "category"
    unchanged = admin.post(url, values)
    assert unchanged.status_code == 400 and "Nothing to change" in html(unchanged)


def test_a_reader_without_tasks_sees_an_empty_worklist(users: dict[str, Any]) -> None:
    client: Client = login(users[Role.BLINDED_READER])
    page = html(client.get(reverse("readings:worklist")))
    assert page.count('<p class="muted">None.</p>') == 4
