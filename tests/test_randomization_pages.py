"""The randomization pages as a user meets them: the allocation card on the
participant page, the randomize confirm page, emergency unblinding, the
scheme set-up page, the dashboard's "Randomized" column and the menu."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from randomization import services
from randomization.models import Allocation, AllocationTableEntry, RandomizationScheme, SchemeStatus, Unblinding
from tests.conftest import SYSTEM, actor_for, login
from trial import services as trial_services
from trial.models import Role, WithdrawalScope

ARM_LABELS = {"ai_assisted": "AI-assisted", "specialist_only": "Specialist only"}


def participant_page(user: Any, participant: Any) -> str:
    response = login(user).get(reverse("trial:participant_detail", args=[participant.pk]))
    assert response.status_code == 200
    return response.content.decode()


def messages_of(response: Any) -> list[tuple[str, str]]:
    return [(message.level_tag, message.message) for message in get_messages(response.wsgi_request)]


# --- Allocation card and randomizing --------------------------------------------------------


def test_a_coordinator_is_offered_randomization_of_a_waiting_participant(block_scheme, coordinator, participant):
    page = participant_page(coordinator, participant)

    assert "Not randomized." in page
    assert reverse("randomization:randomize", args=[participant.pk]) in page


def test_roles_that_may_not_randomize_are_not_offered_it(block_scheme, users, participant):
    for role in (Role.CLINICIAN_READER, Role.MONITOR, Role.TRIAL_ADMIN, Role.PATHOLOGIST):
        page = participant_page(users[role], participant)
        assert reverse("randomization:randomize", args=[participant.pk]) not in page, role


def test_the_confirm_page_says_what_will_happen(block_scheme, coordinator, participant):
    response = login(coordinator).get(reverse("randomization:randomize", args=[participant.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "once" in page and "cannot be undone" in page
    assert f"Randomize {participant.study_id} now" in page
    assert not Allocation.objects.exists()


def test_confirming_randomizes_and_names_the_arm(block_scheme, coordinator, participant):
    client = login(coordinator)

    response = client.post(reverse("randomization:randomize", args=[participant.pk]), follow=True)

    allocation = Allocation.objects.get(participant=participant)
    label = ARM_LABELS[allocation.arm]
    assert response.redirect_chain[-1][0] == reverse("trial:participant_detail", args=[participant.pk])
    assert (
        "success",
        f"{participant.study_id} randomized to {label} (allocation #{allocation.sequence_number}).",
    ) in messages_of(response)
    page = response.content.decode()
    assert f'class="badge arm arm-{"ai" if allocation.arm == "ai_assisted" else "specialist"}">{label}' in page
    assert f"#{allocation.sequence_number}" in page
    assert allocation.stratum in page
    assert coordinator.username in page
    assert reverse("randomization:randomize", args=[participant.pk]) not in page


def test_a_second_confirmation_changes_nothing(block_scheme, coordinator, participant):
    client = login(coordinator)
    url = reverse("randomization:randomize", args=[participant.pk])
    client.post(url)

    again = client.post(url)
    revisit = client.get(url)

    assert Allocation.objects.count() == 1
    assert again.status_code == 302
    assert any(level == "info" and "already been randomized" in text for level, text in messages_of(again))
    assert revisit.status_code == 302
    assert revisit["Location"] == reverse("trial:participant_detail", args=[participant.pk])


def test_a_withdrawn_participant_is_refused_with_the_reason(block_scheme, coordinator, participant):
    trial_services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=participant,
        withdrawn_on=timezone.localdate(),
        scope=WithdrawalScope.STOP_AI_PROCESSING,
        reason="Does not want AI processing",
    )

    response = login(coordinator).post(reverse("randomization:randomize", args=[participant.pk]))

    assert response.status_code == 400
    assert "has withdrawn" in response.content.decode()
    assert not Allocation.objects.exists()
    assert "Withdrawn participants are not randomized." in participant_page(coordinator, participant)


def test_without_an_active_scheme_the_card_says_so_and_offers_no_button(coordinator, participant):
    page = participant_page(coordinator, participant)
    confirm = login(coordinator).get(reverse("randomization:randomize", args=[participant.pk])).content.decode()

    assert "no active randomization scheme" in page
    assert reverse("randomization:randomize", args=[participant.pk]) not in page
    assert "<form" not in confirm.split("<main", 1)[1]


def test_low_table_warnings_are_shown_as_messages(recruiting, coordinator, participant):
    scheme = services.scheme_configure(
        actor=SYSTEM, trial=recruiting, method="permuted_blocks", factors=["site"], block_sizes=[2]
    )
    services.allocation_table_import(
        actor=SYSTEM,
        scheme=scheme,
        content=b"sequence,arm,site\n1,ai_assisted,C01\n2,ai_assisted,C01\n1,ai_assisted,C02\n",
    )
    services.scheme_activate(actor=SYSTEM, trial=recruiting)

    response = login(coordinator).post(reverse("randomization:randomize", args=[participant.pk]))

    assert ("warning", "Only 1 allocation(s) left in stratum site=C01 of the imported table.") in messages_of(response)


@pytest.mark.parametrize(
    "role", [Role.COORDINATOR, Role.CLINICIAN_READER, Role.MONITOR, Role.DSMB, Role.STATISTICIAN_UNBLINDED]
)
def test_roles_that_see_arms_see_the_arm_on_the_card(block_scheme, users, coordinator, participant, role):
    allocation = services.participant_randomize(actor=actor_for(coordinator), participant=participant).allocation

    page = participant_page(users[role], participant)

    assert ARM_LABELS[allocation.arm] in page
    assert "arm concealed" not in page


# --- Emergency unblinding -------------------------------------------------------------------


@pytest.fixture
def randomized(block_scheme: Any, coordinator: Any, participant: Any) -> Any:
    services.participant_randomize(actor=actor_for(coordinator), participant=participant)
    return participant


def test_the_admin_finds_emergency_unblinding_on_the_participant_page(randomized, users):
    page = participant_page(users[Role.TRIAL_ADMIN], randomized)
    form = login(users[Role.TRIAL_ADMIN]).get(reverse("randomization:unblind", args=[randomized.pk]))

    assert reverse("randomization:unblind", args=[randomized.pk]) in page
    text = form.content.decode()
    assert f"UNBLIND {randomized.study_id}" in text
    assert users[Role.PATHOLOGIST].username in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reason": ""}, "This field is required."),
        ({"confirmation": "UNBLIND"}, "to confirm the unblinding"),
    ],
)
def test_a_bad_unblinding_form_is_refused_and_reveals_nothing(randomized, users, change, message):
    data = {
        "revealed_to": users[Role.PATHOLOGIST].pk,
        "reason": "Severe bleeding after biopsy",
        "confirmation": f"UNBLIND {randomized.study_id}",
        **change,
    }

    response = login(users[Role.TRIAL_ADMIN]).post(reverse("randomization:unblind", args=[randomized.pk]), data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Unblinding.objects.exists()


def test_an_unblinding_shows_the_pathologist_the_arm(randomized, users):
    pathologist = users[Role.PATHOLOGIST]
    arm = randomized.allocation.arm
    assert ARM_LABELS[arm] not in participant_page(pathologist, randomized)

    response = login(users[Role.TRIAL_ADMIN]).post(
        reverse("randomization:unblind", args=[randomized.pk]),
        {
            "revealed_to": pathologist.pk,
            "reason": "Severe bleeding after biopsy",
            "confirmation": f"UNBLIND {randomized.study_id}",
        },
    )

    assert response.status_code == 302
    assert Unblinding.objects.get().revealed_to == pathologist
    assert ARM_LABELS[arm] in participant_page(pathologist, randomized)
    listing = login(users[Role.DSMB]).get(reverse("randomization:unblinding_list")).content.decode()
    assert "Severe bleeding after biopsy" in listing
    assert randomized.study_id in listing


# --- Scheme set-up ----------------------------------------------------------------------------


def configure_data(trial: Any, **changes: Any) -> dict[str, Any]:
    return {
        "method": "permuted_blocks",
        "ratio": "1:1",
        "block_sizes": "4, 6",
        "factors": ["site", "indication"],
        "imbalance_measure": "range",
        "minimization_probability": "0.8",
        "low_table_warning": "10",
        "protocol_version": str(trial.protocol_versions.get().pk),
        "reason": "",
        **changes,
    }


def test_the_admin_configures_loads_a_table_and_activates(recruiting, users):
    admin = login(users[Role.TRIAL_ADMIN])
    setup = reverse("randomization:setup", args=[recruiting.pk])

    configured = admin.post(
        reverse("randomization:configure", args=[recruiting.pk]),
        configure_data(recruiting, factors=["site"], block_sizes="2"),
    )
    table = SimpleUploadedFile("t.csv", b"sequence,arm,site\n1,ai_assisted,C01\n1,specialist_only,C02\n")
    loaded = admin.post(reverse("randomization:table_upload", args=[recruiting.pk]), {"file": table})
    activated = admin.post(reverse("randomization:activate", args=[recruiting.pk]), {"confirm": "on"})

    assert configured.status_code == loaded.status_code == activated.status_code == 302
    assert configured["Location"] == setup
    scheme = RandomizationScheme.objects.get()
    assert scheme.status == SchemeStatus.ACTIVE
    assert scheme.source == "table"
    assert ("success", f"Scheme v1 is active and locked; its seed commitment is {scheme.seed_commitment}.") in (
        messages_of(activated)
    )
    page = admin.get(setup).content.decode()
    assert scheme.seed_commitment in page
    assert scheme.table_sha256[:14] in page


def test_a_block_size_that_does_not_fit_the_ratio_is_shown_at_the_field(recruiting, users):
    response = login(users[Role.TRIAL_ADMIN]).post(
        reverse("randomization:configure", args=[recruiting.pk]), configure_data(recruiting, block_sizes="3")
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "Block size 3 is not a positive multiple of 2" in page
    assert not RandomizationScheme.objects.exists()


def test_block_sizes_must_be_numbers(recruiting, users):
    response = login(users[Role.TRIAL_ADMIN]).post(
        reverse("randomization:configure", args=[recruiting.pk]), configure_data(recruiting, block_sizes="four")
    )

    assert response.status_code == 400
    assert "whole numbers separated by commas" in response.content.decode()


def test_minimization_weights_reach_the_scheme(recruiting, users):
    response = login(users[Role.TRIAL_ADMIN]).post(
        reverse("randomization:configure", args=[recruiting.pk]),
        configure_data(
            recruiting, method="minimization", factors=["site", "hpv_status"], weight_hpv_status="2", weight_site="1"
        ),
    )

    assert response.status_code == 302
    scheme = RandomizationScheme.objects.get()
    assert scheme.factor_weights == {"site": 1.0, "hpv_status": 2.0}
    assert scheme.block_sizes == []


def test_a_malformed_table_is_refused_with_a_message_and_loads_nothing(recruiting, users):
    services.scheme_configure(
        actor=SYSTEM, trial=recruiting, method="permuted_blocks", factors=["site"], block_sizes=[2]
    )

    response = login(users[Role.TRIAL_ADMIN]).post(
        reverse("randomization:table_upload", args=[recruiting.pk]),
        {"file": SimpleUploadedFile("t.csv", b"sequence,arm\n1,ai_assisted\n")},
    )

    assert response.status_code == 400
    assert "The table lacks the columns: site." in response.content.decode()
    assert not AllocationTableEntry.objects.exists()


def test_activation_needs_the_confirmation_box(recruiting, users):
    services.scheme_configure(actor=SYSTEM, trial=recruiting, method="simple", factors=["site"])

    response = login(users[Role.TRIAL_ADMIN]).post(reverse("randomization:activate", args=[recruiting.pk]), {})

    assert response.status_code == 400
    assert RandomizationScheme.objects.get().status == SchemeStatus.DRAFT


def test_overseers_see_balance_but_no_set_up_forms(block_scheme, users, coordinator, participant):
    services.participant_randomize(actor=actor_for(coordinator), participant=participant)

    page = login(users[Role.DSMB]).get(reverse("randomization:setup", args=[block_scheme.trial.pk])).content.decode()

    assert "Balance of the arms" in page
    assert "site=C01|indication=cervical" in page
    assert reverse("randomization:configure", args=[block_scheme.trial.pk]) not in page
    assert reverse("randomization:activate", args=[block_scheme.trial.pk]) not in page


def test_the_index_lists_the_trial_with_its_scheme_in_use(block_scheme, users):
    page = login(users[Role.STATISTICIAN_UNBLINDED]).get(reverse("randomization:index")).content.decode()

    assert block_scheme.trial.code in page
    assert f"v{block_scheme.version} · {block_scheme.get_method_display()}" in page
    assert reverse("randomization:setup", args=[block_scheme.trial.pk]) in page


# --- Dashboard and menu ---------------------------------------------------------------------------


def test_the_dashboard_counts_randomized_participants_per_site(block_scheme, users, coordinator, enroll):
    for _ in range(2):
        services.participant_randomize(actor=actor_for(coordinator), participant=enroll())
    enroll()

    response = login(users[Role.PATHOLOGIST]).get(reverse("trial:dashboard"))

    page = response.content.decode()
    assert '<th class="num">Randomized</th>' in page
    site_row = page.split("C01 Site A", 1)[1].split("</tr>", 1)[0]
    cells = [cell.split("</td>")[0] for cell in site_row.split('<td class="num">')[1:]]
    assert cells[:5] == ["3", "3", "0", "3", "2"]  # screened, eligible, not eligible, consented, randomized
    for word in ("ai_assisted", "specialist_only", "AI-assisted", "Specialist only"):
        assert word not in page


@pytest.mark.parametrize(
    ("role", "randomization", "unblindings"),
    [
        (Role.TRIAL_ADMIN, True, True),
        (Role.DSMB, True, True),
        (Role.STATISTICIAN_UNBLINDED, True, True),
        (Role.MONITOR, False, True),
        (Role.COORDINATOR, False, False),
        (Role.STATISTICIAN_BLINDED, False, False),
        (Role.PATHOLOGIST, False, False),
        (Role.BLINDED_READER, False, False),
    ],
)
def test_the_menu_offers_randomization_and_unblindings_to_their_roles(users, role, randomization, unblindings):
    page = login(users[role]).get(reverse("trial:dashboard")).content.decode()
    menu = page.split('<nav class="menu"', 1)[1].split("</nav>", 1)[0]

    assert (f'href="{reverse("randomization:index")}"' in menu) is randomization
    assert (f'href="{reverse("randomization:unblinding_list")}"' in menu) is unblindings
