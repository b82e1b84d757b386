"""Schemathesis against the API's own OpenAPI schema (/api/schema/, drf-
spectacular), for a signed-in user of every role: no answer is a server
error, and every answer is one the schema documents (status code, content
type, body).

In-process: the schema is loaded from, and the requests sent to, the WSGI
application (config.wsgi) inside the test's database transaction, with a
token per user. The path parameters are either the ids of real objects (a
site-A participant with images, AI results and reading tasks, a pending
screening entry, a reference result) or generated, so both the found and
the not-found answers are checked. Hypothesis is derandomized with a small
number of examples per operation and role, so a run is repeatable and
bounded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from readings import services as reading_services
from readings.models import TaskKind
from tests.conftest import PASSWORD, actor_for
from tests.reading_fixtures import Case, valid_read
from trial import services
from trial.models import Role

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 4


@pytest.fixture
def in_process() -> Iterator[None]:
    """Requests run inside the test's transaction: Django must not close the
    connection at the start and end of each one (as its test client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def real_ids(
    users: dict[str, Any], panel: list[Any], make_case: Callable[..., Case], screen: Callable[..., Any]
) -> dict[str, dict[str, Any]]:
    """The path parameters of real objects, by the first segment after /api/v1/."""
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
    assert case.tasks(TaskKind.PANEL)
    participant = case.participant
    reference = services.reference_result_record(
        actor=actor_for(users[Role.COORDINATOR]),
        participant=participant,
        kind="thyroid_cytology",
        sample_date=timezone.localdate() - dt.timedelta(days=1),
        result_date=timezone.localdate(),
        bethesda_category=2,
    )
    return {
        "trials": {"id": participant.trial_id},
        "screening": {"id": screen().pk},
        "participants": {"id": participant.pk, "result_pk": reference.pk},
        "images": {"id": case.images[0].pk},
        "readings": {
            "id": task.pk,
            "read_pk": read.pk,
            "image_pk": case.images[0].pk,
            "n": 0,
            "result_pk": case.ai_results[0].pk,
            "layer": "contour",
        },
    }


def _strategy(operation: Any, real_ids: dict[str, dict[str, Any]]) -> Any:
    names = [parameter.name for parameter in operation.path_parameters]
    generated = operation.as_strategy()
    if not names:
        return generated
    segment = operation.path.removeprefix("/api/v1/").split("/")[0]
    known = real_ids.get(segment, {})
    real = {name: known[name] for name in names if name in known}
    return st.one_of(operation.as_strategy(path_parameters=real), generated) if real else generated


@pytest.mark.parametrize("role", Role.values)
def test_the_api_keeps_to_its_schema_for_every_role(role, users, real_ids, in_process, settings_fuzz):
    token = Token.objects.create(user=users[role])
    headers = {"Authorization": f"Token {token.key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, headers=headers)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40

    for operation in operations:

        @settings_fuzz
        @given(case=_strategy(operation, real_ids))
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            check()
        except (Exception, FailureGroup) as error:  # every operation's failures are gathered
            failures.append(f"{operation.label} as {role}: {error}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def settings_fuzz() -> Any:
    cache.clear()
    return settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
