"""Reads of images, scoped by trial, site and role (trial.permissions)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

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
