"""Who may take the trial's analysis data sets, and what of the arm they see.

Rules (trial.permissions): EXPORT_ANALYSIS_DATA is held by the statisticians,
the DSMB and the trial admin, and an analysis data set is trial-wide, so a
trial-wide membership is needed. The arm follows randomization.selectors: a
VIEW_ARM role gets the real arm; a VIEW_ARM_MASKED role gets the trial's own
"A"/"B" labels (the real arm once the trial is unblinded); any other role
gets no arm column at all. An export is never a mix of real and masked arms
(an emergency unblinding of one participant to the user would reveal the
mapping of every masked row), so per-participant unblindings do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.http import Http404

from randomization import selectors as randomization_selectors
from randomization.models import Arm
from trial.models import Trial
from trial.permissions import Capability
from trial.selectors import require_capability, role_for

ArmMode = Literal["real", "masked", "none"]


@dataclass(frozen=True)
class ExportScope:
    """What one user may export of one trial."""

    trial: Trial
    role: str
    arm_mode: ArmMode
    arm_labels: dict[str, str]  # arm code → the value exported ({} when no arm)


def export_scope(user: Any, trial_pk: int) -> ExportScope:
    """PermissionDenied without EXPORT_ANALYSIS_DATA anywhere; Http404 when
    the user holds it, but not trial-wide in this trial."""
    require_capability(user, Capability.EXPORT_ANALYSIS_DATA)
    trial = Trial.objects.filter(pk=trial_pk).first()
    role = role_for(user, Capability.EXPORT_ANALYSIS_DATA, trial_id=trial_pk, site_id=None) if trial else None
    if trial is None or role is None:
        raise Http404("No such trial.")
    real = {code: code for code in Arm.values}
    if role_for(user, Capability.VIEW_ARM, trial_id=trial.pk, site_id=None):
        return ExportScope(trial, role, "real", real)
    if role_for(user, Capability.VIEW_ARM_MASKED, trial_id=trial.pk, site_id=None):
        if randomization_selectors.trial_unblinded(trial):
            return ExportScope(trial, role, "real", real)
        # The same labels the blinded statistician sees on every page.
        return ExportScope(trial, role, "masked", dict(randomization_selectors.masked_labels(trial)))
    return ExportScope(trial, role, "none", {})
