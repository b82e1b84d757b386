"""Receivers: an accepted image queues its AI job; a withdrawal from AI
processing cancels pending jobs. Connected in AiEngineConfig.ready."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from ai_engine import jobs
from imaging.signals import image_accepted
from trial.signals import ai_processing_withdrawn


@receiver(image_accepted, dispatch_uid="ai-engine-queue-accepted-image")
def _queue_accepted_image(sender: Any, image_id: int, **kwargs: Any) -> None:
    jobs.on_image_accepted(image_id)


@receiver(ai_processing_withdrawn, dispatch_uid="ai-engine-cancel-on-withdrawal")
def _cancel_on_withdrawal(sender: Any, participant: Any, actor: Any, role: str, reason: str, **kwargs: Any) -> None:
    jobs.cancel_for_withdrawal(participant=participant, actor=actor, role=role, reason=reason)
