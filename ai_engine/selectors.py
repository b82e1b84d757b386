"""Reads of the model registry and of the AI results. `active_model_for`
serves the inference workers (no user involved); the listings carry the
VIEW_AI_MODELS rule; the AI results carry no permission logic yet."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from django.db.models import QuerySet
from PIL import Image as PILImage

from ai_engine.models import AiResult, ModelVersion, TrialModel
from imaging import storage
from imaging.models import Image
from trial.models import Trial
from trial.permissions import Capability, role_can
from trial.selectors import memberships_of, require_capability


def active_model_for(*, trial: Trial, indication: str) -> ModelVersion | None:
    """The model producing the AI second opinion for this trial and indication."""
    deployment = (
        TrialModel.objects.select_related("model_version")
        .filter(trial=trial, indication=indication, active=True)
        .first()
    )
    return deployment.model_version if deployment is not None else None


def model_versions_visible(user: Any) -> QuerySet[ModelVersion]:
    """Every registered version (the registry is shared by all trials), for a
    user who may view AI models in some trial; PermissionDenied otherwise."""
    require_capability(user, Capability.VIEW_AI_MODELS)
    return ModelVersion.objects.order_by("name", "-registered_at", "-id")


def model_deployments_visible(user: Any) -> QuerySet[TrialModel]:
    """Deployments, history included, of the trials where the user may view
    AI models; PermissionDenied when there is none."""
    require_capability(user, Capability.VIEW_AI_MODELS)
    trial_ids = {m.trial_id for m in memberships_of(user) if role_can(m.role, Capability.VIEW_AI_MODELS)}
    return (
        TrialModel.objects.filter(trial_id__in=trial_ids)
        .select_related("trial", "model_version")
        .order_by("trial__code", "indication", "-activated_at", "-id")
    )


def ai_results_for_image(*, image: Image) -> QuerySet[AiResult]:
    """Every AI result of the image, one per model version, oldest first.
    Plain on purpose: who may see a result (arms, blinding) is decided by the
    readings issue, whose selectors must wrap this one; never show it to a
    user as it is."""
    return AiResult.objects.filter(image=image).select_related("model_version").order_by("created_at", "id")


class AiResultFileMissing(Exception):
    """The result has no such file (it abstained, failed, or is not finished)."""


def ai_result_mask(result: AiResult) -> np.ndarray:
    """The lesion mask, uint8 (H, W) 0/1, read from storage and verified
    against its sha256 (StoredFileCorrupt when it was altered)."""
    if not result.mask:
        raise AiResultFileMissing(f"The AI result {result.pk} ({result.status}) has no mask.")
    data = storage.read_verified(result.mask.name, result.mask_sha256)
    with PILImage.open(io.BytesIO(data)) as picture:
        pixels = np.asarray(picture.convert("L"))
    return (pixels > 127).astype(np.uint8)


def ai_result_probability(result: AiResult) -> np.ndarray:
    """The lesion probability map, float16 (H, W), read from storage and
    verified against its sha256 (StoredFileCorrupt when it was altered)."""
    if not result.probability:
        raise AiResultFileMissing(f"The AI result {result.pk} ({result.status}) has no probability map.")
    data = storage.read_verified(result.probability.name, result.probability_sha256)
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return np.asarray(archive["probability"], dtype=np.float16)
