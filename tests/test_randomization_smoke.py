from tests.conftest import actor_for
from randomization import services
from randomization.models import Allocation


def test_it_allocates_an_enrolled_participant_once(block_scheme, coordinator, participant):
    first = services.participant_randomize(actor=actor_for(coordinator), participant=participant)
    again = services.participant_randomize(actor=actor_for(coordinator), participant=participant)
    assert first.created and not again.created
    assert first.allocation.pk == again.allocation.pk
    assert Allocation.objects.count() == 1
    assert first.allocation.stratum == "site=C01|indication=cervical"
    assert first.allocation.sequence_number == 1
