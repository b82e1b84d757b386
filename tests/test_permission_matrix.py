"""The permission matrix: every URL pattern of the project, for every role,
anonymous and a coordinator of another site, with real objects in the URL.

MATRIX below is the reviewed table of expected statuses. The enumeration
walks django.urls.get_resolver(); a pattern that MATRIX does not cover
fails test_every_url_pattern_is_in_the_matrix, so a new endpoint cannot
arrive without its access rules being written down here. The expectations
agree with the focused tests (test_pages_permissions, test_api_permissions,
test_readings_access, test_imaging_permissions, test_randomization_
permissions, test_admin); this file checks that nothing is left out.

Reads are requested with GET. A write endpoint is requested with GET (405
for a signed-in user: the wrong method) and with its write method and a
valid body where it needs one: refused (401/403/404, or the login page) for
whoever may not write, and nothing written (no row of any model); a writer
whose request would succeed is left to the focused tests, one whose empty
body is refused gets 400. Whoever is refused with the valid body is refused
the same way with an empty and with an invalid body: the right to write is
checked before the input, so a refusal tells nothing of the input's rules
(test_a_refusal_does_not_depend_on_the_body).

The Django admin is its own rule (the trial admin's site, test_admin.py):
the index for every caller, and the enumeration of its patterns is left
to the admin."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from analysis import services as analysis_services
from analysis.models import Report, ReportKind
from analysis.reports.pdf import render_report
from readings import services as reading_services
from readings.models import TaskKind
from tests.analysis_report_factory import make_analysis
from tests.conftest import PASSWORD, actor_for
from tests.reading_fixtures import Case, valid_read
from trial import services
from trial.models import ReferenceKind, Role

ANONYMOUS = "anonymous"
COORDINATOR_B = "coordinator_site_b"
PRINCIPALS = (*Role.values, COORDINATOR_B, ANONYMOUS)


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str]]:
    """(URL name with its namespace, route) of every pattern; the admin's
    resolver is one entry, "admin"."""
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if entry.app_name == "admin":
                yield "admin", route
                continue
            inner = f"{namespace}:{entry.namespace}" if namespace and entry.namespace else entry.namespace or namespace
            yield from walk(entry.url_patterns, route, inner or "")
        else:
            assert isinstance(entry, URLPattern)
            name = entry.name or route
            yield (f"{namespace}:{name}" if namespace else name), route


def all_patterns() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, route in walk(get_resolver().url_patterns):
        assert name not in found, f"two URL patterns named {name}: {found[name]} and {route}"
        found[name] = route
    return found


# --- The objects in the URLs ----------------------------------------------------------


@pytest.fixture
def world(
    users: dict[str, Any],
    coordinator_b: Any,
    panel: list[Any],
    make_case: Callable[..., Case],
    screen: Callable[..., Any],
) -> SimpleNamespace:
    """Site-A objects of every kind a URL names: a thyroid participant in the
    AI-assisted arm with an image, its AI result and reading tasks (the
    clinical read started by the site-A clinician, the unaided read signed,
    a panel task, whose reader is the blinded reader here), a reference result, a
    screening entry still pending, and a finished open and closed report."""
    from randomization.models import Arm

    case = make_case(Arm.AI_ASSISTED)
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    reading_services.reading_task_start(actor=actor_for(clinician), task=task)
    read = reading_services.read_sign(
        actor=actor_for(clinician),
        task=task,
        phase="unaided",
        data=valid_read("thyroid"),
        revision=0,
        password=PASSWORD,
    )
    panel_task = case.tasks(TaskKind.PANEL)[0]
    participant = case.participant
    trial = participant.trial
    result = services.reference_result_record(
        actor=actor_for(users[Role.COORDINATOR]),
        participant=participant,
        kind=ReferenceKind.THYROID_CYTOLOGY,
        sample_date=timezone.localdate() - dt.timedelta(days=1),
        result_date=timezone.localdate(),
        bethesda_category=2,
    )
    reports = {}
    for kind, requester in ((ReportKind.OPEN, Role.STATISTICIAN_BLINDED), (ReportKind.CLOSED, Role.DSMB)):
        report = Report.objects.create(trial=trial, kind=kind, requested_by=users[requester])
        pdf = render_report(make_analysis(closed=kind == ReportKind.CLOSED, n=40), requested_by=requester)
        reports[kind] = analysis_services.report_finish(report, pdf=pdf, data_sha256="cd" * 32)
    people = {role: users[role] for role in Role.values}
    people[Role.BLINDED_READER] = panel_task.assignee  # a panel reader of this case
    people[COORDINATOR_B] = coordinator_b
    people[ANONYMOUS] = None
    return SimpleNamespace(
        people=people,
        trial=trial,
        participant=participant,
        image=case.images[0],
        ai_result=case.ai_results[0],
        task=task,
        read=read,
        panel_task=panel_task,
        reference=result,
        pending=screen(),
        open_report=reports[ReportKind.OPEN],
        closed_report=reports[ReportKind.CLOSED],
    )


def client_for(world: SimpleNamespace, who: str) -> Client:
    client = Client()
    user = world.people[who]
    if user is not None:
        client.force_login(user)
    return client


# --- The table -------------------------------------------------------------------------
#
# One row per URL pattern (a name with "#" names a second object for the same
# pattern). `get` and `write` give the status of each caller, in PRINCIPALS
# order:
#   coordinator, clinician reader, blinded reader, pathologist, statistician
#   (blinded), statistician (unblinded), DSMB member, monitor, trial admin,
#   a coordinator of site B (the objects are at site A), anonymous.
# A number is the status; L is a redirect to the login page (?next=…), AL
# to the admin's; 302 another redirect; - not requested (a writer whose request would
# succeed and write: the focused tests cover the writes themselves).
# Writes are sent with `method` and `body` (a valid body where the endpoint
# needs one, so that a refusal is the permission's, not the input's).

W = SimpleNamespace  # the world fixture's objects
Body = Callable[[W], dict[str, Any]]


@dataclass(frozen=True)
class Row:
    get: str
    url: Callable[[W], dict[str, Any]] = field(default=lambda w: {})
    query: str = ""
    write: str | None = None
    method: str = "post"
    body: Body | None = None
    multipart: bool = False
    # The statuses for an empty or invalid body where they differ from
    # `write`'s (only where the body names the object acted on).
    bad_body: str | None = None


def statuses(tokens: str) -> dict[str, str]:
    values = tokens.split()
    assert len(values) == len(PRINCIPALS), tokens
    return dict(zip(PRINCIPALS, values, strict=True))


def _today() -> str:
    return timezone.localdate().isoformat()


def _now() -> str:
    return (timezone.now() - dt.timedelta(minutes=5)).isoformat()


def pending(w: W) -> dict[str, Any]:
    return {"pk": w.pending.pk}


def participant(w: W) -> dict[str, Any]:
    return {"pk": w.participant.pk}


def trial_pk(w: W) -> dict[str, Any]:
    return {"pk": w.trial.pk}


def image(w: W) -> dict[str, Any]:
    return {"pk": w.image.pk}


def task(w: W) -> dict[str, Any]:
    return {"pk": w.task.pk}


def panel_task(w: W) -> dict[str, Any]:
    return {"pk": w.panel_task.pk}


MATRIX: dict[str, Row] = {
    # Sign-in and out, the token, the schema and its docs (signed-in users only).
    "login": Row("200 200 200 200 200 200 200 200 200 200 200", write="200 200 200 200 200 200 200 200 200 200 200"),
    "logout": Row("405 405 405 405 405 405 405 405 405 405 405", write="302 302 302 302 302 302 302 302 302 302 302"),
    "api-token": Row(
        "405 405 405 405 405 405 405 405 405 405 405", write="400 400 400 400 400 400 400 400 400 400 400"
    ),
    "api-schema": Row("200 200 200 200 200 200 200 200 200 200 401"),
    "api-docs": Row("200 200 200 200 200 200 200 200 200 200 401"),
    # Enrollment API (test_api_permissions.py).
    "api-trial-list": Row("200 200 200 200 200 200 200 200 200 200 401"),
    "api-trial-detail": Row("200 200 200 200 200 200 200 200 200 200 401", trial_pk),
    "api-site-list": Row("200 200 403 200 200 200 200 200 200 200 401"),
    "api-recruitment": Row("200 200 403 200 200 200 200 200 200 200 401"),
    # The site is named in the body: the site-B coordinator, who may screen
    # (at site B), is told of a body naming no valid site (400); one naming
    # site A is refused (404) whatever the rest of it says.
    "api-screening-list": Row(
        "200 200 403 200 200 200 200 200 200 200 401",
        write="- 403 403 403 403 403 403 403 403 404 401",
        bad_body="- 403 403 403 403 403 403 403 403 400 401",
        body=lambda w: {
            "site": w.participant.site_id,
            "screened_on": _today(),
            "indication": "cervical",
            "year_of_birth": 1985,
            "sex": "female",
        },
    ),
    "api-screening-detail": Row("200 200 403 200 200 200 200 200 200 404 401", pending),
    "api-screening-correct": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        pending,
        write="- 403 403 403 403 403 403 403 403 404 401",
        body=lambda w: {"year_of_birth": 1979, "reason": "Typing error"},
    ),
    "api-eligibility": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        pending,
        write="- 403 403 403 403 403 403 403 403 404 401",
        body=lambda w: {"answers": {"IN1": True, "IN2": True, "EX1": False, "EX2": False}},
    ),
    "api-screening-close": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        pending,
        write="- 403 403 403 403 403 403 403 403 404 401",
        body=lambda w: {"outcome": "declined", "reason": "Does not wish to take part"},
    ),
    "api-enroll": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        pending,
        write="- 403 403 403 403 403 403 403 403 404 401",
        body=lambda w: {
            "form_version": "1.0",
            "consented_at": _now(),
            "taken_by": w.people[Role.COORDINATOR].pk,
            "covariates": {"hpv_status": "positive"},
        },
    ),
    "api-participant-list": Row("200 200 403 200 200 200 200 200 200 200 401"),
    "api-participant-detail": Row("200 200 403 200 200 200 200 200 200 404 401", participant),
    "api-withdraw": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        participant,
        write="- 403 403 403 403 403 403 403 403 404 401",
        body=lambda w: {"withdrawn_on": _today(), "scope": "stop_follow_up", "reason": "Moved away"},
    ),
    "api-consent-renew": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        participant,
        write="- 403 403 403 403 403 403 403 403 404 401",
        body=lambda w: {"form_version": "1.0", "consented_at": _now(), "taken_by": w.people[Role.COORDINATOR].pk},
    ),
    "api-reference-results": Row(
        "200 403 403 200 200 200 200 200 200 404 401",
        participant,
        write="- 403 403 - 403 403 403 403 403 404 401",
        body=lambda w: {
            "kind": "thyroid_cytology",
            "sample_date": _today(),
            "result_date": _today(),
            "bethesda_category": 3,
        },
    ),
    "api-reference-correct": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        lambda w: {"pk": w.participant.pk, "result_pk": w.reference.pk},
        write="- 403 403 - 403 403 403 403 403 404 401",
        body=lambda w: {"bethesda_category": 4, "reason": "Second look at the slides"},
    ),
    "api-participant-timeline": Row("200 200 403 200 200 200 200 200 200 404 401", participant),
    "api-audit-events": Row("403 403 403 403 403 403 403 200 200 403 401"),
    # Randomization API (test_randomization_permissions.py). The participant
    # is randomized already: the coordinator's request answers its allocation.
    "api-randomize": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        participant,
        write="200 403 403 403 403 403 403 403 403 404 401",
    ),
    "api-allocation": Row("200 200 403 200 200 200 200 200 200 404 401", participant),
    "api-unblind": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        participant,
        write="403 403 403 403 403 403 403 403 - 404 401",
        body=lambda w: {
            "revealed_to": w.people[Role.TRIAL_ADMIN].pk,
            "reason": "Serious adverse event",
            "confirmation": f"UNBLIND {w.participant.study_id}",
        },
    ),
    "api-unblindings": Row("403 403 403 403 403 200 200 200 200 403 401"),
    "api-randomization-schemes": Row(
        "403 403 403 403 403 200 200 403 200 403 401",
        trial_pk,
        write="403 403 403 403 403 403 403 403 - 403 401",
        body=lambda w: {"method": "permuted_blocks", "block_sizes": [2, 4], "factors": ["site"]},
    ),
    # No draft scheme to activate: the trial admin is told so (400).
    "api-randomization-activate": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        trial_pk,
        write="403 403 403 403 403 403 403 403 400 403 401",
    ),
    "api-randomization-table": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        trial_pk,
        write="403 403 403 403 403 403 403 403 - 403 401",
        body=lambda w: {"file": _table_csv()},
        multipart=True,
    ),
    "api-randomization-balance": Row("403 403 403 403 403 200 200 403 200 403 401", trial_pk),
    # Imaging API (test_imaging_permissions.py); uploads take a file, and the
    # coordinator's empty upload is refused as such (400).
    "api-participant-images": Row(
        "200 200 403 403 200 200 403 200 200 404 401",
        participant,
        write="400 403 403 403 403 403 403 403 403 404 401",
        multipart=True,
    ),
    "api-participant-images-export": Row("403 403 403 403 200 200 403 200 403 403 401", participant),
    "api-participant-images-ai-status": Row("200 200 403 403 200 200 403 200 200 404 401", participant),
    "api-image-detail": Row("200 200 403 403 200 200 403 200 200 404 401", image),
    "api-image-preview": Row("200 200 403 403 200 200 403 200 200 404 401", image),
    "api-image-thumbnail": Row("200 200 403 403 200 200 403 200 200 404 401", image),
    "api-image-frames": Row("200 200 403 403 200 200 403 200 200 404 401", image),
    "api-image-file": Row("200 200 403 403 200 200 403 200 200 404 401", image),
    "api-ai-operations": Row("403 403 403 403 403 403 403 403 200 403 401", query="trial={code}"),
    # Readings API (test_readings_access.py): the clinical task is the site-A
    # clinician's; a reader it is not for gets 404, everyone else 403.
    "api-reading-tasks": Row("403 200 200 403 403 403 403 403 403 403 401"),
    "api-reading-task": Row("403 200 404 403 403 403 403 403 403 403 401", task),
    "api-reading-task#panel": Row("403 404 200 403 403 403 403 403 403 403 401", panel_task),
    "api-reading-task-start": Row(
        "405 405 405 405 405 405 405 405 405 405 401", task, write="403 200 404 403 403 403 403 403 403 403 401"
    ),
    "api-reading-draft": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        task,
        write="403 400 404 403 403 403 403 403 403 403 401",
        method="put",
    ),
    "api-reading-sign": Row(
        "405 405 405 405 405 405 405 405 405 405 401", task, write="403 400 404 403 403 403 403 403 403 403 401"
    ),
    "api-reading-correct": Row(
        "405 405 405 405 405 405 405 405 405 405 401",
        lambda w: {"pk": w.task.pk, "read_pk": w.read.pk},
        write="403 400 404 403 403 403 403 403 403 403 401",
    ),
    "api-reading-frame": Row(
        "403 200 404 403 403 403 403 403 403 403 401",
        lambda w: {"pk": w.task.pk, "image_pk": w.image.pk, "n": 0},
    ),
    "api-reading-frame#panel": Row(
        "403 404 200 403 403 403 403 403 403 403 401",
        lambda w: {"pk": w.panel_task.pk, "image_pk": w.image.pk, "n": 0},
    ),
    "api-reading-ai": Row("403 200 404 403 403 403 403 403 403 403 401", task),
    # The AI second opinion is never a panel reader's, even on their own task.
    "api-reading-ai#panel": Row("403 404 404 403 403 403 403 403 403 403 401", panel_task),
    "api-reading-ai-layer": Row(
        "403 200 404 403 403 403 403 403 403 403 401",
        lambda w: {"pk": w.task.pk, "result_pk": w.ai_result.pk, "layer": "contour"},
    ),
    "api-reading-oversight": Row("403 403 403 403 403 403 403 200 200 403 401"),
    "api-reading-oversight-task": Row("403 403 403 403 403 403 403 200 200 403 401", task),
    "api-reading-policy": Row("403 403 403 403 403 403 403 403 200 403 401", trial_pk),
    # Analysis API.
    "api-trial-analysis-data": Row("403 403 403 403 200 200 200 403 200 403 401", trial_pk),
    # Randomization pages.
    "randomization:index": Row("403 403 403 403 403 200 200 403 200 403 L"),
    "randomization:setup": Row("403 403 403 403 403 200 200 403 200 403 L", trial_pk),
    "randomization:configure": Row(
        "405 405 405 405 405 405 405 405 405 405 L", trial_pk, write="403 403 403 403 403 403 403 403 400 403 L"
    ),
    "randomization:table_upload": Row(
        "405 405 405 405 405 405 405 405 405 405 L", trial_pk, write="403 403 403 403 403 403 403 403 400 403 L"
    ),
    "randomization:activate": Row(
        "405 405 405 405 405 405 405 405 405 405 L", trial_pk, write="403 403 403 403 403 403 403 403 400 403 L"
    ),
    # GET: the coordinator is sent back to the participant (already randomized).
    "randomization:randomize": Row(
        "302 403 403 403 403 403 403 403 403 404 L", participant, write="302 403 403 403 403 403 403 403 403 404 L"
    ),
    "randomization:unblind": Row(
        "403 403 403 403 403 403 403 403 200 404 L", participant, write="403 403 403 403 403 403 403 403 400 404 L"
    ),
    "randomization:unblinding_list": Row("403 403 403 403 403 200 200 200 200 403 L"),
    # Imaging pages.
    "imaging:participant_images": Row(
        "200 200 403 403 200 200 403 200 200 404 L", participant, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "imaging:image_detail": Row("200 200 403 403 200 200 403 200 200 404 L", image),
    # AI operations pages: the trial admin's; the index sends them to their trial's page.
    "ai_engine:operations_index": Row("403 403 403 403 403 403 403 403 302 403 L"),
    "ai_engine:operations": Row("403 403 403 403 403 403 403 403 200 403 L", lambda w: {"code": w.trial.code}),
    "ai_engine:ai_result_file": Row(
        "403 403 403 403 403 403 403 403 200 403 L", lambda w: {"pk": w.ai_result.pk, "kind": "overlay"}
    ),
    # Reading pages.
    "readings:worklist": Row("403 200 200 403 403 403 403 403 403 403 L"),
    "readings:task": Row(
        "403 200 404 403 403 403 403 403 403 403 L", task, write="403 400 404 403 403 403 403 403 403 403 L"
    ),
    "readings:task#panel": Row("403 404 200 403 403 403 403 403 403 403 L", panel_task),
    "readings:correct": Row(
        "403 200 404 403 403 403 403 403 403 403 L",
        lambda w: {"pk": w.task.pk, "read_pk": w.read.pk},
        write="403 400 404 403 403 403 403 403 403 403 L",
    ),
    "readings:oversight": Row("403 403 403 403 403 403 403 200 200 403 L"),
    "readings:oversight_task": Row("403 403 403 403 403 403 403 200 200 403 L", task),
    "readings:policy": Row(
        "403 403 403 403 403 403 403 403 200 403 L",
        lambda w: {"trial_pk": w.trial.pk},
        write="403 403 403 403 403 403 403 403 400 403 L",
    ),
    # Analysis pages: a report the caller may not see is not found (404,
    # analysis.selectors.report_get); a closed report is for those who see
    # the arms (unblinded statistician, DSMB, trial admin).
    "analysis:reports": Row(
        "403 403 403 403 200 200 200 403 200 403 L", write="403 403 403 403 400 400 400 403 400 403 L"
    ),
    "analysis:report_status": Row("404 404 404 404 200 200 200 404 200 404 L", lambda w: {"pk": w.open_report.pk}),
    "analysis:report_status#closed": Row(
        "404 404 404 404 404 200 200 404 200 404 L", lambda w: {"pk": w.closed_report.pk}
    ),
    "analysis:report_download": Row("404 404 404 404 200 200 200 404 200 404 L", lambda w: {"pk": w.open_report.pk}),
    "analysis:report_download#closed": Row(
        "404 404 404 404 404 200 200 404 200 404 L", lambda w: {"pk": w.closed_report.pk}
    ),
    "analysis:data_download": Row(
        "405 405 405 405 405 405 405 405 405 405 L", trial_pk, write="403 403 403 403 - - - 403 - 403 L"
    ),
    # Enrollment pages (test_pages_permissions.py).
    "trial:dashboard": Row("200 200 200 200 200 200 200 200 200 200 L"),
    "trial:screening_list": Row("200 200 403 200 200 200 200 200 200 200 L"),
    # The site-B coordinator may screen at their own site.
    "trial:screening_create": Row(
        "200 403 403 403 403 403 403 403 403 200 L", write="400 403 403 403 403 403 403 403 403 400 L"
    ),
    "trial:screening_detail": Row("200 200 403 200 200 200 200 200 200 404 L", pending),
    "trial:eligibility_assess": Row(
        "405 405 405 405 405 405 405 405 405 405 L", pending, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "trial:enroll": Row(
        "405 405 405 405 405 405 405 405 405 405 L", pending, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "trial:screening_close": Row(
        "405 405 405 405 405 405 405 405 405 405 L", pending, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "trial:screening_correct": Row(
        "405 405 405 405 405 405 405 405 405 405 L", pending, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "trial:participant_list": Row("200 200 403 200 200 200 200 200 200 200 L"),
    "trial:participant_detail": Row("200 200 403 200 200 200 200 200 200 404 L", participant),
    "trial:withdraw": Row(
        "405 405 405 405 405 405 405 405 405 405 L", participant, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "trial:reference_record": Row(
        "405 405 405 405 405 405 405 405 405 405 L", participant, write="400 403 403 400 403 403 403 403 403 404 L"
    ),
    "trial:reference_correct": Row(
        "200 403 403 200 403 403 403 403 403 404 L",
        lambda w: {"pk": w.participant.pk, "result_pk": w.reference.pk},
        write="400 403 403 400 403 403 403 403 403 404 L",
    ),
    "trial:consent_renew": Row(
        "405 405 405 405 405 405 405 405 405 405 L", participant, write="400 403 403 403 403 403 403 403 403 404 L"
    ),
    "trial:audit_list": Row("403 403 403 403 403 403 403 200 200 403 L"),
    "trial:audit_export": Row("403 403 403 403 403 403 403 200 200 403 L"),
}

# The admin (its own rule): the trial admin's; everyone else is sent to its login.
ADMIN_PATHS = ("/admin/", "/admin/trial/site/", "/admin/trial/auditevent/")
ADMIN = statuses("AL AL AL AL AL AL AL AL 200 AL AL")


def _table_csv() -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("table.csv", b"sequence,arm,site\n1,ai_assisted,C01\n2,specialist_only,C01\n")


# --- The checks ------------------------------------------------------------------------


def test_every_url_pattern_is_in_the_matrix():
    patterns = set(all_patterns())
    covered = {name.split("#")[0] for name in MATRIX} | {"admin"}
    assert sorted(patterns - covered) == [], "URL patterns without a row in MATRIX: add their expected statuses"
    assert sorted(covered - patterns) == [], "rows of MATRIX for URL patterns that no longer exist"
    for name, row in MATRIX.items():
        statuses(row.get)
        if row.write:
            statuses(row.write)
        if row.bad_body:
            statuses(row.bad_body)
        assert not (row.write is None and (row.body or row.bad_body)), name


def _path(name: str, row: Row, world: W) -> str:
    path = reverse(name.split("#")[0], kwargs=row.url(world))
    return f"{path}?{row.query.format(code=world.trial.code)}" if row.query else path


def _matches(token: str, response: Any, path: str) -> bool:
    location = response.get("Location", "")
    if token == "L":
        return response.status_code == 302 and location.startswith(f"{reverse('login')}?next=")
    if token == "AL":
        return response.status_code == 302 and location.startswith("/admin/login/?next=")
    if token == "302":
        return response.status_code == 302 and not location.startswith(f"{reverse('login')}?next=")
    return response.status_code == int(token)


def _describe(response: Any) -> str:
    location = response.get("Location")
    return f"{response.status_code}" + (f" → {location}" if location else "")


def written() -> int:
    """Rows of every model but the sessions (a logout ends one): a refused
    request changes none."""
    from django.contrib.sessions.models import Session

    return sum(model.objects.count() for model in apps.get_models() if model is not Session)


def test_each_caller_gets_each_page_and_endpoint_as_the_matrix_says(world):
    cache.clear()
    failures = []
    clients = {who: client_for(world, who) for who in PRINCIPALS}
    for name, row in MATRIX.items():
        path = _path(name, row, world)
        for who, token in statuses(row.get).items():
            if token == "-":
                continue
            response = clients[who].get(path)
            if not _matches(token, response, path):
                failures.append(f"GET {path} ({name}) as {who}: {_describe(response)}, expected {token}")
    for path in ADMIN_PATHS:
        for who, token in ADMIN.items():
            response = clients[who].get(path)
            if not _matches(token, response, path):
                failures.append(f"GET {path} (admin) as {who}: {_describe(response)}, expected {token}")
    assert not failures, "\n".join(failures)


def test_a_refused_write_is_refused_and_writes_nothing(world):
    cache.clear()
    failures = []
    for name, row in MATRIX.items():
        if row.write is None:
            continue
        path = _path(name, row, world)
        for who, token in statuses(row.write).items():
            if token == "-":
                continue
            client = client_for(world, who)
            body = row.body(world) if row.body else {}
            before = written()
            send = getattr(client, row.method)
            if row.multipart:
                response = send(path, body)
            else:
                response = send(path, json.dumps(body), content_type="application/json")
            added = written() - before
            if not _matches(token, response, path):
                failures.append(
                    f"{row.method.upper()} {path} ({name}) as {who}: {_describe(response)}, expected {token}"
                )
            elif (token in {"L", "AL"} or int(token) >= 400) and added:
                failures.append(f"{row.method.upper()} {path} ({name}) as {who}: refused but wrote {added} rows")
    assert not failures, "\n".join(failures)


REFUSALS = {"401", "403", "404", "L", "AL"}


def _invalid(body: dict[str, Any]) -> dict[str, Any]:
    """The body with every value of the wrong kind (a body-less write gets
    an unknown field)."""
    return {key: "?" for key in body} or {"unexpected": "?"}


def test_a_refusal_does_not_depend_on_the_body(world):
    """Whoever is refused a write with a valid body is refused it with an
    empty and with an invalid one (never 400, which would tell them the
    input's rules), and nothing is written."""
    cache.clear()
    failures = []
    for name, row in MATRIX.items():
        if row.write is None:
            continue
        path = _path(name, row, world)
        valid = row.body(world) if row.body else {}
        expected = statuses(row.bad_body or row.write)
        for who, token in statuses(row.write).items():
            if token not in REFUSALS:
                continue
            for label, body in (("empty", {}), ("invalid", _invalid(valid))):
                client = client_for(world, who)
                before = written()
                send = getattr(client, row.method)
                if row.multipart:
                    response = send(path, body)
                else:
                    response = send(path, json.dumps(body), content_type="application/json")
                added = written() - before
                want = expected[who]
                if not _matches(want, response, path):
                    failures.append(
                        f"{row.method.upper()} {path} ({name}) as {who}, {label} body: {_describe(response)}, "
                        f"expected {want}"
                    )
                elif added:
                    failures.append(f"{row.method.upper()} {path} ({name}) as {who}, {label} body: wrote {added} rows")
    assert not failures, "\n".join(failures)
