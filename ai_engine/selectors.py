"""Reads of the model registry. `active_model_for` serves the inference
workers (no user involved); the listings carry the VIEW_AI_MODELS rule."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from ai_engine.models import ModelVersion, TrialModel
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
