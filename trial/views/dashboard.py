"""The home page: recruitment by trial and site, or a role's duties."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from randomization import selectors as randomization_selectors
from trial import selectors
from trial.models import Role, Trial
from trial.selectors import SiteRecruitment

# What each role does here, for the home page of roles without the recruitment view.
ROLE_DUTIES: dict[str, str] = {
    Role.COORDINATOR: "Screens, checks eligibility, records consent and enrolls participants at your site.",
    Role.CLINICIAN_READER: "Reads the images of your site's participants (the clinical read).",
    Role.BLINDED_READER: (
        "Reads cases for the independent panel, in your own random order. Enrollment, arms, AI output, "
        "other readings and the reference standard are hidden from this role by the protocol's blinding rules."
    ),
    Role.PATHOLOGIST: "Records histology and cytology results (the reference standard).",
    Role.STATISTICIAN_BLINDED: "Runs open reports: pooled figures, arms masked.",
    Role.STATISTICIAN_UNBLINDED: "Runs closed reports by arm.",
    Role.DSMB: "Reviews closed reports and interim analyses.",
    Role.MONITOR: "Reviews the data and the audit trail of your sites (read-only).",
    Role.TRIAL_ADMIN: "Sets up the trial, its sites, users and roles.",
}


# --- Recruitment dashboard ----------------------------------------------------------


@dataclass
class TrialRecruitment:
    trial: Trial
    rows: list[SiteRecruitment] = field(default_factory=list)
    # Participants randomized per site id: counts only, never arms.
    randomized: dict[int, int] = field(default_factory=dict)

    @property
    def site_rows(self) -> list[tuple[SiteRecruitment, int]]:
        return [(row, self.randomized.get(row.site.pk, 0)) for row in self.rows]

    def _sum(self, name: str) -> int:
        return sum(getattr(row, name) for row in self.rows)

    @property
    def totals(self) -> dict[str, Any]:
        target = self._sum("target")
        consented = self._sum("consented")
        return {
            "screened": self._sum("screened"),
            "eligible": self._sum("eligible"),
            "ineligible": self._sum("ineligible"),
            "consented": consented,
            "randomized": sum(self.randomized.get(row.site.pk, 0) for row in self.rows),
            "withdrawn": self._sum("withdrawn"),
            "target": target,
            "percent_of_target": round(100.0 * consented / target, 1) if target else None,
        }


def _by_trial(rows: list[SiteRecruitment], randomized: dict[int, int]) -> list[TrialRecruitment]:
    trials: dict[int, TrialRecruitment] = {}
    for row in rows:
        trials.setdefault(row.trial.pk, TrialRecruitment(row.trial, randomized=randomized)).rows.append(row)
    return list(trials.values())


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    try:
        rows = selectors.recruitment_summary(request.user)
    except PermissionDenied:
        # Roles outside enrollment (the blinded panel) get a home page instead.
        duties = [
            (membership, ROLE_DUTIES.get(membership.role, "")) for membership in selectors.memberships_of(request.user)
        ]
        return render(request, "trial/home.html", {"duties": duties})
    return render(
        request,
        "trial/dashboard.html",
        {
            "trials": _by_trial(rows, randomization_selectors.randomized_per_site(request.user)),
            "exclusion_reasons": selectors.exclusion_reason_counts(request.user),
        },
    )
