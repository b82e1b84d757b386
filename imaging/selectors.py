"""Reads of images, scoped by trial, site and role (trial.permissions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from ai_engine.models import AiResult, AiResultStatus
from ai_engine.selectors import active_model_for
from imaging.models import Image, ImageStatus
from trial.models import Participant
from trial.permissions import Capability
from trial.selectors import require_capability, role_for, scope_filter


def can_upload(user: Any, participant: Participant) -> bool:
    return bool(role_for(user, Capability.UPLOAD_IMAGES, trial_id=participant.trial_id, site_id=participant.site_id))


def can_export(user: Any, participant: Participant) -> bool:
    return bool(role_for(user, Capability.EXPORT_IMAGES, trial_id=participant.trial_id, site_id=participant.site_id))


def images_of(user: Any, participant: Participant, *, include_rejected: bool = True) -> QuerySet[Image]:
    """A participant's images (the caller read the participant through
    trial.selectors). Withdrawn data are not shown."""
    if not role_for(user, Capability.VIEW_IMAGES, trial_id=participant.trial_id, site_id=participant.site_id):
        raise PermissionDenied("Your role does not see images.")
    images = Image.objects.filter(participant=participant).select_related("deidentification", "study")
    if participant.data_withdrawn:
        images = images.none()
    if not include_rejected:
        images = images.exclude(status=ImageStatus.REJECTED)
    return images.order_by("uploaded_at", "id")


def image_get(user: Any, pk: int) -> Image:
    require_capability(user, Capability.VIEW_IMAGES)
    image = (
        Image.objects.filter(scope_filter(user, Capability.VIEW_IMAGES), pk=pk, participant__data_withdrawn=False)
        .select_related("participant", "deidentification", "study", "trial", "site")
        .first()
    )
    if image is None:
        raise Http404("No such image.")
    return image


def exportable_images(user: Any, participant: Participant) -> QuerySet[Image]:
    """Accepted, de-identified images for an export (monitors, statisticians);
    nothing for a participant who withdrew their data."""
    if not can_export(user, participant):
        raise PermissionDenied("Your role does not export images.")
    if participant.data_withdrawn:
        return Image.objects.none()
    return Image.objects.filter(participant=participant).exclude(status=ImageStatus.REJECTED).order_by("id")


# --- Where each image stands with the AI ------------------------------------------------

# The state of the work only, never what the AI said: the output (mask,
# category, measurements, why it abstained) is the readings' to show, to the
# AI arm's clinical reader after the unaided read. The state is the same in
# both arms (the specialist-only arm runs in shadow mode), so it reveals no arm.
AI_STATE_LABELS: dict[str, str] = {
    AiResultStatus.QUEUED: "Queued",
    AiResultStatus.RUNNING: "Running",
    AiResultStatus.DONE: "Done",
    AiResultStatus.ABSTAINED: "Abstained (image unfit for the model)",
    AiResultStatus.FAILED: "Failed",
    AiResultStatus.CANCELLED: "Cancelled (withdrawn from AI processing)",
}
AI_FINAL_STATES: frozenset[str] = frozenset(
    {AiResultStatus.DONE, AiResultStatus.ABSTAINED, AiResultStatus.FAILED, AiResultStatus.CANCELLED}
)
NOT_ANALYSED = "not_analysed"


@dataclass(frozen=True)
class AiAnalysis:
    """Where one image stands with the AI: queued, running, done, abstained,
    failed, cancelled or not_analysed. `final` when nothing more will happen
    without someone acting (a failed result is retried only by hand)."""

    image_id: int
    state: str
    label: str
    final: bool


def ai_analysis_of(user: Any, participant: Participant) -> list[AiAnalysis]:
    """The AI state of each of the participant's images the user sees
    (images_of decides which), in upload order; the latest model's result
    where a change of model gave an image several."""
    images = list(images_of(user, participant).select_related(None).only("pk", "status"))
    latest: dict[int, str] = dict(
        AiResult.objects.filter(image__in=[image.pk for image in images])
        .order_by("created_at", "id")
        .values_list("image_id", "status")
    )
    model_deployed: bool | None = None
    analyses = []
    for image in images:
        status = latest.get(image.pk)
        if status is not None:
            analyses.append(AiAnalysis(image.pk, status, AI_STATE_LABELS[status], status in AI_FINAL_STATES))
        elif not image.is_usable:
            analyses.append(AiAnalysis(image.pk, NOT_ANALYSED, "Not analysed (image rejected)", True))
        elif not participant.accepts_ai_processing:
            analyses.append(AiAnalysis(image.pk, NOT_ANALYSED, "Not analysed (withdrawn from AI processing)", True))
        else:
            if model_deployed is None:
                model_deployed = (
                    active_model_for(trial=participant.trial, indication=participant.indication) is not None
                )
            if model_deployed:
                # Accepted a moment ago, or its queueing was lost: the sweeper queues it.
                analyses.append(AiAnalysis(image.pk, AiResultStatus.QUEUED, AI_STATE_LABELS["queued"], False))
            else:
                analyses.append(AiAnalysis(image.pk, NOT_ANALYSED, "Not analysed yet (no AI model deployed)", True))
    return analyses
