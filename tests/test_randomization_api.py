"""The randomization API: randomizing once, what each role sees of an arm,
scheme set-up, table import, balance and emergency unblinding, with the
clear 4xx answers a bad request must get."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from randomization import services
from randomization.models import Allocation, AllocationTableEntry, RandomizationScheme, SchemeStatus, Unblinding
from tests.conftest import SYSTEM, actor_for, api_client
from trial import services as trial_services
from trial.models import AuditEvent, Role, WithdrawalScope

ARM_LABELS = {"ai_assisted": "AI-assisted", "specialist_only": "Specialist only"}


def randomize(user: Any, participant: Any) -> Any:
    return api_client(user).post(f"/api/v1/participants/{participant.pk}/randomize/")


def allocation_of(user: Any, participant: Any) -> dict[str, Any]:
    response = api_client(user).get(f"/api/v1/participants/{participant.pk}/allocation/")
    assert response.status_code == 200
    return response.json()


def schemes_url(trial: Any, tail: str = "schemes/") -> str:
    return f"/api/v1/trials/{trial.pk}/randomization/{tail}"


def upload(content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("allocation-table.csv", content, content_type="text/csv")


# --- Randomize ------------------------------------------------------------------------------


def test_it_randomizes_once_and_returns_the_same_allocation_on_a_repeat(block_scheme, coordinator, participant):
    first = randomize(coordinator, participant)
    again = randomize(coordinator, participant)

    assert first.status_code == 201, first.content
    assert again.status_code == 200
    body = first.json()
    assert body["arm"] in ARM_LABELS
    assert body["arm_label"] == ARM_LABELS[body["arm"]]
    assert body["masked"] is False
    assert body["sequence_number"] == 1
    assert body["stratum"] == "site=C01|indication=cervical"
    assert body["stratum_position"] == 1
    assert body["allocated_by"] == coordinator.username
    assert body["created"] is True
    assert body["warnings"] == []
    assert {**again.json(), "created": True} == body
    assert Allocation.objects.filter(participant=participant).count() == 1


def test_a_monitor_posting_randomize_gets_403_and_nothing_is_written(block_scheme, users, participant):
    events = AuditEvent.objects.count()

    response = randomize(users[Role.MONITOR], participant)

    assert response.status_code == 403
    assert not Allocation.objects.exists()
    assert AuditEvent.objects.count() == events


def test_a_site_b_coordinator_gets_404_for_a_site_a_participant(block_scheme, coordinator_b, participant):
    response = randomize(coordinator_b, participant)

    assert response.status_code == 404
    assert not Allocation.objects.exists()


def test_a_withdrawn_participant_is_not_randomized(block_scheme, coordinator, participant):
    trial_services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=participant,
        withdrawn_on=timezone.localdate(),
        scope=WithdrawalScope.STOP_FOLLOW_UP,
        reason="Moved away",
    )

    response = randomize(coordinator, participant)

    assert response.status_code == 400
    assert "withdrawn" in response.json()["detail"]
    assert participant.study_id in response.json()["detail"]
    assert not Allocation.objects.exists()


def test_a_participant_without_consent_is_not_randomized(block_scheme, coordinator, participant):
    participant.consents.all().delete()

    response = randomize(coordinator, participant)

    assert response.status_code == 400
    assert "has not consented" in response.json()["detail"]
    assert not Allocation.objects.exists()


def test_it_says_when_the_trial_has_no_active_scheme(coordinator, participant):
    response = randomize(coordinator, participant)

    assert response.status_code == 400
    assert "no active randomization scheme" in response.json()["detail"]


def test_it_warns_when_an_imported_table_runs_low(recruiting, users, coordinator, enroll):
    services.scheme_configure(
        actor=SYSTEM, trial=recruiting, method="permuted_blocks", factors=["site"], block_sizes=[2]
    )
    table = b"sequence,arm,site\n1,ai_assisted,C01\n2,specialist_only,C01\n3,ai_assisted,C01\n1,ai_assisted,C02\n"
    admin = api_client(users[Role.TRIAL_ADMIN])
    assert admin.post(schemes_url(recruiting, "table/"), {"file": upload(table)}, format="multipart").status_code == 201
    assert admin.post(schemes_url(recruiting, "activate/")).status_code == 200

    body = randomize(coordinator, enroll()).json()

    assert body["arm"] == "ai_assisted"
    assert body["warnings"] == ["Only 2 allocation(s) left in stratum site=C01 of the imported table."]


# --- What each role sees --------------------------------------------------------------------


def test_it_reports_a_participant_not_yet_randomized(block_scheme, coordinator, participant):
    assert allocation_of(coordinator, participant) == {
        "randomized": False,
        "arm": None,
        "arm_label": None,
        "masked": False,
        "sequence_number": None,
        "allocated_at": None,
    }


@pytest.mark.parametrize(
    "role",
    [Role.COORDINATOR, Role.CLINICIAN_READER, Role.MONITOR, Role.DSMB, Role.STATISTICIAN_UNBLINDED, Role.TRIAL_ADMIN],
)
def test_roles_that_act_on_or_oversee_arms_see_the_real_arm(block_scheme, users, coordinator, participant, role):
    allocation = services.participant_randomize(actor=actor_for(coordinator), participant=participant).allocation

    body = allocation_of(users[role], participant)

    assert body["randomized"] is True
    assert body["arm"] == allocation.arm
    assert body["arm_label"] == ARM_LABELS[allocation.arm]
    assert body["masked"] is False
    assert body["sequence_number"] == allocation.sequence_number


def test_the_blinded_statistician_gets_one_fixed_letter_per_arm(block_scheme, users, coordinator, enroll, site_b):
    statistician = users[Role.STATISTICIAN_BLINDED]
    letters: dict[str, set[str]] = {}
    for _ in range(6):
        participant = enroll()
        arm = services.participant_randomize(actor=actor_for(coordinator), participant=participant).allocation.arm
        body = allocation_of(statistician, participant)
        assert body["arm"] is None and body["masked"] is True
        letters.setdefault(arm, set()).add(body["arm_label"])

    assert all(len(labels) == 1 for labels in letters.values())
    assert set().union(*letters.values()) <= {"A", "B"}
    if len(letters) == 2:
        assert letters["ai_assisted"] != letters["specialist_only"]


def test_an_emergency_unblinding_shows_the_pathologist_the_real_arm(block_scheme, users, coordinator, participant):
    allocation = services.participant_randomize(actor=actor_for(coordinator), participant=participant).allocation
    pathologist = users[Role.PATHOLOGIST]
    assert allocation_of(pathologist, participant)["arm"] is None

    response = api_client(users[Role.TRIAL_ADMIN]).post(
        f"/api/v1/participants/{participant.pk}/unblind/",
        {
            "revealed_to": pathologist.pk,
            "reason": "Unexpected histology; the arm matters for the diagnosis",
            "confirmation": f"UNBLIND {participant.study_id}",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["revealed_to"] == pathologist.username
    body = allocation_of(pathologist, participant)
    assert body["arm"] == allocation.arm
    assert body["arm_label"] == ARM_LABELS[allocation.arm]


# --- Scheme set-up ----------------------------------------------------------------------------


def test_the_admin_configures_a_draft_from_a_ratio_and_block_sizes(recruiting, users):
    response = api_client(users[Role.TRIAL_ADMIN]).post(
        schemes_url(recruiting),
        {"method": "permuted_blocks", "ratio": "2:1", "block_sizes": [3, 6], "factors": ["site", "hpv_status"]},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1
    assert body["status"] == SchemeStatus.DRAFT
    assert body["ratio"] == "2:1"
    assert body["block_sizes"] == [3, 6]
    assert body["factors"] == ["site", "hpv_status"]
    assert body["seed_commitment"] == ""
    assert body["protocol_version"] == "1.0"


def test_a_block_size_that_does_not_fit_the_ratio_is_rejected_naming_block_sizes(recruiting, users):
    response = api_client(users[Role.TRIAL_ADMIN]).post(
        schemes_url(recruiting),
        {"method": "permuted_blocks", "ratio": "1:1", "block_sizes": [3], "factors": ["site"]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["field"] == "block_sizes"
    assert "Block size 3" in response.json()["detail"]
    assert not RandomizationScheme.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "simple", "ratio": "1-1", "factors": ["site"]}, "ratio"),
        ({"method": "simple", "ratio": "0:1", "factors": ["site"]}, "ratio"),
        ({"method": "shuffle", "factors": ["site"]}, "method"),
        ({"method": "simple", "factors": ["postcode"]}, "factors"),
        ({"method": "minimization", "factors": []}, "factors"),
        ({"method": "minimization", "factors": ["site"], "minimization_probability": 0.3}, "minimization_probability"),
        ({"method": "simple", "factors": ["site"], "protocol_version": 999999}, "protocol_version"),
    ],
)
def test_a_bad_scheme_is_rejected_with_the_field_named(recruiting, users, body, field):
    response = api_client(users[Role.TRIAL_ADMIN]).post(schemes_url(recruiting), body, format="json")

    assert response.status_code == 400
    answer = response.json()
    assert field in answer or answer.get("field") == field, answer
    assert not RandomizationScheme.objects.exists()


def test_a_scheme_in_use_changes_only_with_a_new_protocol_version_and_a_reason(block_scheme, users):
    admin = api_client(users[Role.TRIAL_ADMIN])

    same_protocol = admin.post(
        schemes_url(block_scheme.trial), {"method": "simple", "factors": ["site"], "reason": "Simpler"}, format="json"
    )
    no_reason = admin.post(schemes_url(block_scheme.trial), {"method": "simple", "factors": ["site"]}, format="json")

    assert same_protocol.status_code == 400
    assert same_protocol.json()["field"] == "protocol_version"
    assert no_reason.status_code == 400
    assert no_reason.json()["field"] == "reason"


def test_activation_commits_to_the_seed_and_supersedes_the_scheme_in_use(recruiting, users):
    admin = api_client(users[Role.TRIAL_ADMIN])
    admin.post(schemes_url(recruiting), {"method": "simple", "factors": ["site"]}, format="json")

    response = admin.post(schemes_url(recruiting, "activate/"))

    assert response.status_code == 200
    assert response.json()["status"] == SchemeStatus.ACTIVE
    assert len(response.json()["seed_commitment"]) == 64
    listed = admin.get(schemes_url(recruiting)).json()
    assert [scheme["status"] for scheme in listed] == [SchemeStatus.ACTIVE]


def test_activation_without_a_draft_says_so(recruiting, users):
    response = api_client(users[Role.TRIAL_ADMIN]).post(schemes_url(recruiting, "activate/"))

    assert response.status_code == 400
    assert "no draft" in response.json()["detail"]


def test_a_table_loads_into_the_draft(recruiting, users):
    admin = api_client(users[Role.TRIAL_ADMIN])
    admin.post(schemes_url(recruiting), {"method": "permuted_blocks", "block_sizes": [2], "factors": ["site"]})
    table = b"sequence,arm,site\n1,ai_assisted,C01\n2,specialist_only,C01\n1,specialist_only,C02\n"

    response = admin.post(schemes_url(recruiting, "table/"), {"file": upload(table)}, format="multipart")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["rows"], body["strata"]) == (3, 2)
    assert body["scheme"]["source"] == "table"
    assert body["scheme"]["table_sha256"] == body["sha256"]
    assert body["scheme"]["table_rows"] == 3
    assert AllocationTableEntry.objects.count() == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"position,arm,site\n1,ai_assisted,C01\n", "lacks the columns: sequence"),
        (b"sequence,arm,site\n1,placebo,C01\n1,ai_assisted,C02\n", "unknown arm 'placebo'"),
        (b"sequence,arm,site\none,ai_assisted,C01\n1,ai_assisted,C02\n", "not a whole number"),
        (b"sequence,arm,site\n1,ai_assisted,C01\n", "no rows for the strata: site=C02"),
        (b"sequence,arm,site\n", "no rows"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"sequence,arm,site\n1,ai_assisted,C01\n3,ai_assisted,C01\n1,ai_assisted,C02\n", "gaps"),
    ],
)
def test_a_malformed_table_is_rejected_with_a_message_and_loads_nothing(recruiting, users, content, message):
    admin = api_client(users[Role.TRIAL_ADMIN])
    admin.post(schemes_url(recruiting), {"method": "permuted_blocks", "block_sizes": [2], "factors": ["site"]})

    response = admin.post(schemes_url(recruiting, "table/"), {"file": upload(content)}, format="multipart")

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert response.json()["field"] == "file"
    assert not AllocationTableEntry.objects.exists()
    assert RandomizationScheme.objects.get().source == "seed"


def test_a_table_upload_without_a_file_is_rejected(recruiting, users):
    admin = api_client(users[Role.TRIAL_ADMIN])
    admin.post(schemes_url(recruiting), {"method": "permuted_blocks", "block_sizes": [2], "factors": ["site"]})

    response = admin.post(schemes_url(recruiting, "table/"), {}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()


def test_a_table_without_a_draft_is_refused(block_scheme, users):
    response = api_client(users[Role.TRIAL_ADMIN]).post(
        schemes_url(block_scheme.trial, "table/"),
        {"file": upload(b"sequence,arm,site,indication\n")},
        format="multipart",
    )

    assert response.status_code == 400
    assert "no draft" in response.json()["detail"]


# --- Balance ------------------------------------------------------------------------------------


def test_the_balance_counts_arms_overall_per_stratum_and_per_factor_level(
    block_scheme, users, coordinator, coordinator_b, enroll, site_b
):
    arms = []
    for site, user in [(None, coordinator), (None, coordinator), (site_b, coordinator_b)]:
        participant = enroll(site=site, user=user)
        arms.append(services.participant_randomize(actor=actor_for(user), participant=participant).allocation.arm)

    body = api_client(users[Role.DSMB]).get(schemes_url(block_scheme.trial, "balance/")).json()

    overall = body["overall"]
    assert overall["total"] == 3
    assert overall["ai_assisted"] == arms.count("ai_assisted")
    assert overall["difference"] == overall["ai_assisted"] - overall["specialist_only"]
    strata = {row["group"]: row["total"] for row in body["strata"]}
    assert strata == {"site=C01|indication=cervical": 2, "site=C02|indication=cervical": 1}
    margins = {row["group"]: row["total"] for row in body["margins"]}
    assert margins == {"site=C01": 2, "site=C02": 1, "indication=cervical": 3}


# --- Unblinding -----------------------------------------------------------------------------------


@pytest.fixture
def randomized(block_scheme: Any, coordinator: Any, participant: Any) -> Any:
    services.participant_randomize(actor=actor_for(coordinator), participant=participant)
    return participant


def unblind(user: Any, participant: Any, **body: Any) -> Any:
    return api_client(user).post(f"/api/v1/participants/{participant.pk}/unblind/", body, format="json")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"confirmation": "UNBLIND"}, "confirmation"),
        ({"confirmation": "unblind C01-0001-typo"}, "confirmation"),
        ({"revealed_to": 999999}, "revealed_to"),
    ],
)
def test_a_bad_unblinding_request_is_rejected_and_reveals_nothing(randomized, users, change, field):
    body = {
        "revealed_to": users[Role.PATHOLOGIST].pk,
        "reason": "Patient safety",
        "confirmation": f"UNBLIND {randomized.study_id}",
        **change,
    }

    response = unblind(users[Role.TRIAL_ADMIN], randomized, **body)

    assert response.status_code == 400
    answer = response.json()
    assert field in answer or answer.get("field") == field, answer
    assert not Unblinding.objects.exists()


def test_the_confirmation_message_says_what_to_type(randomized, users):
    response = unblind(
        users[Role.TRIAL_ADMIN],
        randomized,
        revealed_to=users[Role.PATHOLOGIST].pk,
        reason="Patient safety",
        confirmation="yes",
    )

    assert f"UNBLIND {randomized.study_id}" in response.json()["detail"]


def test_an_arm_is_revealed_to_a_trial_member_only(randomized, users, make_user):
    outsider = make_user("outsider")

    response = unblind(
        users[Role.TRIAL_ADMIN],
        randomized,
        revealed_to=outsider.pk,
        reason="Patient safety",
        confirmation=f"UNBLIND {randomized.study_id}",
    )

    assert response.status_code == 400
    assert response.json()["field"] == "revealed_to"
    assert not Unblinding.objects.exists()


def test_a_second_unblinding_for_the_same_person_is_a_conflict(randomized, users):
    body = {
        "revealed_to": users[Role.PATHOLOGIST].pk,
        "reason": "Patient safety",
        "confirmation": f"UNBLIND {randomized.study_id}",
    }
    assert unblind(users[Role.TRIAL_ADMIN], randomized, **body).status_code == 201

    response = unblind(users[Role.TRIAL_ADMIN], randomized, **body)

    assert response.status_code == 409
    assert Unblinding.objects.count() == 1


def test_a_participant_not_randomized_cannot_be_unblinded(block_scheme, users, participant):
    body = {"revealed_to": users[Role.PATHOLOGIST].pk, "reason": "x", "confirmation": f"UNBLIND {participant.study_id}"}

    by_admin = unblind(users[Role.TRIAL_ADMIN], participant, **body)
    by_coordinator = unblind(users[Role.COORDINATOR], participant, **body)

    assert by_admin.status_code == 400
    assert "has not been randomized" in by_admin.json()["detail"]
    assert by_coordinator.status_code == 403


def test_the_unblinding_list_shows_each_reader_the_unblindings_of_their_sites(
    randomized, users, coordinator_b, enroll, site_b
):
    participant_b = enroll(site=site_b, user=coordinator_b)
    services.participant_randomize(actor=actor_for(coordinator_b), participant=participant_b)
    admin = users[Role.TRIAL_ADMIN]
    for participant in (randomized, participant_b):
        services.allocation_unblind(
            actor=actor_for(admin),
            allocation=participant.allocation,
            revealed_to=users[Role.PATHOLOGIST],
            reason="Patient safety",
            confirmation=f"UNBLIND {participant.study_id}",
        )

    by_dsmb = api_client(users[Role.DSMB]).get("/api/v1/unblindings/").json()["results"]
    by_monitor = api_client(users[Role.MONITOR]).get("/api/v1/unblindings/").json()["results"]

    assert {row["study_id"] for row in by_dsmb} == {randomized.study_id, participant_b.study_id}
    assert [row["study_id"] for row in by_monitor] == [randomized.study_id]
    assert by_monitor[0]["reason"] == "Patient safety"
    assert by_monitor[0]["requested_by"] == admin.username


def test_the_api_schema_describes_the_randomization_endpoints(users):
    response = api_client(users[Role.TRIAL_ADMIN]).get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/participants/{id}/randomize/",
        "/api/v1/participants/{id}/allocation/",
        "/api/v1/participants/{id}/unblind/",
        "/api/v1/unblindings/",
        "/api/v1/trials/{id}/randomization/schemes/",
        "/api/v1/trials/{id}/randomization/activate/",
        "/api/v1/trials/{id}/randomization/table/",
        "/api/v1/trials/{id}/randomization/balance/",
    ):
        assert path in paths
