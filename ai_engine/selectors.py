"""Reads of the model registry and of the AI results. `active_model_for`
serves the inference workers (no user involved); the listings carry the
VIEW_AI_MODELS rule; the files of a result (ai_result_file) are for the
trial admins who manage the AI; the other reads of AI results carry no
permission logic yet."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import QuerySet
from django.http import Http404
from PIL import Image as PILImage

from ai_engine.models import AiResult, AiResultStatus, ModelVersion, TrialModel
from imaging import storage
from imaging.models import FileFormat, Image
from trial.models import Trial
from trial.permissions import Capability, role_can
from trial.selectors import memberships_of, require_capability, sites_for


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


# --- AI output for other software: trial admins only, for now -----------------------


@dataclass(frozen=True)
class ResultFileKind:
    """One file of an AI result that other software reads."""

    kind: str
    label: str
    content_type: str
    extension: str


AI_RESULT_FILE_KINDS: dict[str, ResultFileKind] = {
    "segmentation": ResultFileKind("segmentation", "DICOM Segmentation", "application/dicom", "dcm"),
    "overlay": ResultFileKind("overlay", "PNG overlay", "image/png", "png"),
    "mask": ResultFileKind("mask", "mask PNG", "image/png", "png"),
}


@dataclass(frozen=True)
class AiResultFile:
    """A stored file of an AI result, as ai_result_file found it."""

    result: AiResult
    kind: ResultFileKind
    name: str
    sha256: str

    @property
    def download_name(self) -> str:
        # No participant identifier: the file may travel to other software.
        return f"ai-result-{self.result.pk}-{self.kind.kind}.{self.kind.extension}"


def ai_result_file(user: Any, pk: int, kind: str) -> AiResultFile:
    """The stored `kind` file (segmentation, overlay or mask) of an AI result
    and the sha256 it must match, for a user who administers the AI of the
    result's trial at the result's site. Other roles are refused outright:
    who else may see AI output (clinicians by arm, blinded readers never) is
    the readings' rule, not this one's. PermissionDenied without the
    capability anywhere; Http404 for an unknown kind or result, a result
    outside the user's trials or sites, a participant who withdrew their
    data, or a result without that file."""
    require_capability(user, Capability.MANAGE_AI_MODELS)
    file_kind = AI_RESULT_FILE_KINDS.get(kind)
    if file_kind is None:
        known = ", ".join(AI_RESULT_FILE_KINDS)
        raise Http404(f"No such kind of AI output: {kind!r} (one of {known}).")
    trial_ids = {m.trial_id for m in memberships_of(user) if role_can(m.role, Capability.MANAGE_AI_MODELS)}
    sites = sites_for(user, Capability.MANAGE_AI_MODELS).values("pk")
    result = (
        AiResult.objects.select_related("image__participant", "image__trial", "image__site", "model_version")
        .filter(pk=pk, image__trial_id__in=trial_ids, image__site_id__in=sites)
        .first()
    )
    if result is None:
        raise Http404(f"No AI result {pk} among the trials and sites whose AI you administer.")
    if result.image.participant.data_withdrawn:
        raise Http404(f"AI result {pk}: the participant withdrew their data; their AI output is not given out.")
    name = str(getattr(result, kind).name or "")
    if not name:
        raise Http404(_missing_file(result, file_kind))
    return AiResultFile(result=result, kind=file_kind, name=name, sha256=getattr(result, f"{kind}_sha256"))


def _missing_file(result: AiResult, kind: ResultFileKind) -> str:
    """Why a result has no such file, in words."""
    what = f"AI result {result.pk} has no {kind.label}"
    if result.status == AiResultStatus.ABSTAINED:
        return f"{what}: the AI abstained on the image ({result.reason})."
    if result.status != AiResultStatus.DONE:
        why = f" ({result.reason})" if result.reason else ""
        return f"{what}: it is {result.status}{why}; only a finished result has files."
    if result.export_note:
        return f"{what}: {result.export_note}"
    if not (result.segmentation or result.overlay):
        return f"{what} yet: its exports are still being made."
    if kind.kind == "segmentation" and result.image.file_format != FileFormat.DICOM:
        return f"{what}: only DICOM images get a DICOM Segmentation (this one is {result.image.file_format})."
    return f"{what}."
