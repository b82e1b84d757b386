"""Receivers: tasks are made when a participant is randomized (in the
allocation's transaction) and when an image is accepted (after its upload
commits); a withdrawal that ends new clinical data cancels open tasks (in
the withdrawal's transaction). Connected in ReadingsConfig.ready."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from imaging.models import Image
from imaging.signals import image_accepted
from randomization.signals import participant_randomized
from readings import services
from trial.signals import clinical_data_withdrawn


@receiver(participant_randomized, dispatch_uid="readings-tasks-on-randomization")
def _tasks_on_randomization(sender: Any, allocation: Any, **kwargs: Any) -> None:
    # Images usually come after randomization: skip the work until then.
    if Image.objects.filter(participant_id=allocation.participant_id, status__in=services.USABLE).exists():
        services.reading_tasks_ensure(participant_id=allocation.participant_id)


@receiver(image_accepted, dispatch_uid="readings-tasks-on-accepted-image")
def _tasks_on_accepted_image(sender: Any, image_id: int, **kwargs: Any) -> None:
    participant_id = Image.objects.filter(pk=image_id).values_list("participant_id", flat=True).first()
    if participant_id is not None:
        services.reading_tasks_ensure(participant_id=participant_id)


@receiver(clinical_data_withdrawn, dispatch_uid="readings-cancel-on-withdrawal")
def _cancel_on_withdrawal(sender: Any, participant: Any, actor: Any, role: str, reason: str, **kwargs: Any) -> None:
    services.reading_tasks_cancel_for_withdrawal(participant=participant, actor=actor, role=role, reason=reason)
