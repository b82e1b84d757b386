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

from django.db.models import Q, QuerySet
from django.http import Http404

from analysis.models import Report
from randomization import selectors as randomization_selectors
from randomization.models import Arm
from trial.models import Trial
from trial.permissions import Capability
from trial.selectors import memberships_of, require_capability, role_for

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


# Reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportTrial:
    """A trial whose reports the user may see, and which kinds."""

    trial: Trial
    scope: ExportScope

    @property
    def kinds(self) -> list[str]:
        return ["open", "closed"] if self.scope.arm_mode == "real" else ["open"]


def report_trials(user: Any) -> list[ReportTrial]:
    """The trials where the user holds EXPORT_ANALYSIS_DATA trial-wide: open
    reports; closed ones too where the user sees the real arms."""
    trial_ids = sorted({m.trial_id for m in memberships_of(user)})
    found = []
    for trial_id in trial_ids:
        if role_for(user, Capability.EXPORT_ANALYSIS_DATA, trial_id=trial_id, site_id=None) is None:
            continue
        scope = export_scope(user, trial_id)
        found.append(ReportTrial(scope.trial, scope))
    return sorted(found, key=lambda item: item.trial.code)


def reports_visible(user: Any) -> QuerySet[Report]:
    """The reports the user may see (and download)."""
    condition = Q(pk__in=[])
    for item in report_trials(user):
        condition |= Q(trial=item.trial, kind__in=item.kinds)
    return Report.objects.filter(condition).select_related("trial", "requested_by").order_by("-requested_at", "-pk")


def report_get(user: Any, pk: int) -> Report:
    """Http404 for a report the user may not see."""
    report = reports_visible(user).filter(pk=pk).first()
    if report is None:
        raise Http404("No such report.")
    return report
