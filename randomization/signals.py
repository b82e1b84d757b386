"""When recruitment opens, the trial's draft randomization scheme is locked
and its seed committed, in the same transaction as the status change."""

from typing import Any

from django.dispatch import Signal, receiver

from randomization.models import RandomizationScheme, SchemeStatus
from trial.signals import recruitment_opened

# Sent by services.participant_randomize inside its transaction when a new
# allocation is made (not for a repeated request). Arguments: allocation.
participant_randomized = Signal()


@receiver(recruitment_opened, dispatch_uid="randomization-activate-on-recruitment")
def activate_scheme_when_recruitment_opens(sender: Any, *, trial: Any, actor: Any, **kwargs: Any) -> None:
    from randomization.services import scheme_activate

    has_active = RandomizationScheme.objects.filter(trial=trial).filter(status=SchemeStatus.ACTIVE).exists()
    has_draft = RandomizationScheme.objects.filter(trial=trial).filter(status=SchemeStatus.DRAFT).exists()
    if has_draft and not has_active:
        scheme_activate(actor=actor, trial=trial)
