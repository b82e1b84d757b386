"""Reads that reveal arms: the one place that decides who sees a real arm,
a masked "A"/"B" label, or nothing; and who sees the scheme and balance.

Rules (trial.permissions): VIEW_ARM roles at the participant's site see the
real arm; the blinded statistician sees "A"/"B" until the seeds are revealed;
pathologists and blinded readers see no arm unless an emergency unblinding
names them. The scheme's design (block sizes, factors) is shown only to roles
that configure or oversee it: knowing block sizes helps predict the next arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from randomization import algorithms
from randomization.models import Allocation, Arm, RandomizationScheme, SchemeSecret, SchemeStatus, Unblinding
from trial.models import Participant, Trial
from trial.permissions import Capability, role_can
from trial.selectors import memberships_of, require_capability, role_for, scope_filter, sites_for

_ARM_LABELS = dict(Arm.choices)


@dataclass(frozen=True)
class ArmView:
    """What one user may know of one participant's arm."""

    randomized: bool
    arm: str | None = None  # the real arm code, when it may be seen
    label: str = ""  # "AI-assisted", "Specialist only", "A", "B", or ""
    masked: bool = False

    @property
    def visible(self) -> bool:
        return bool(self.label)


def masked_labels(trial: Trial) -> dict[str, str]:
    """The trial's A/B labels, fixed by its first scheme's seed so they never
    change between scheme versions."""
    secret = (
        SchemeSecret.objects.filter(scheme__trial=trial).exclude(scheme__seed_commitment="").order_by("scheme__version")
    ).first()
    if secret is None:
        return {Arm.AI_ASSISTED: "A", Arm.SPECIALIST_ONLY: "B"}
    return algorithms.masked_labels(secret.seed)


def trial_unblinded(trial: Trial) -> bool:
    return RandomizationScheme.objects.filter(trial=trial).exclude(seed_revealed_at=None).exists()


def arm_view(user: Any, allocation: Allocation | None) -> ArmView:
    if allocation is None:
        return ArmView(randomized=False)
    if role_for(user, Capability.VIEW_ARM, trial_id=allocation.trial_id, site_id=allocation.site_id):
        return ArmView(True, allocation.arm, _ARM_LABELS[allocation.arm])
    if Unblinding.objects.filter(allocation=allocation, revealed_to=user).exists():
        return ArmView(True, allocation.arm, _ARM_LABELS[allocation.arm])
    if role_for(user, Capability.VIEW_ARM_MASKED, trial_id=allocation.trial_id, site_id=allocation.site_id):
        if trial_unblinded(allocation.trial):
            return ArmView(True, allocation.arm, _ARM_LABELS[allocation.arm])
        return ArmView(True, None, masked_labels(allocation.trial)[allocation.arm], masked=True)
    return ArmView(randomized=True)


def allocation_of(user: Any, participant: Participant) -> tuple[Allocation | None, ArmView]:
    """The participant's allocation (if any) and what the user may see of it.
    The caller has already read the participant through trial.selectors."""
    allocation = Allocation.objects.filter(participant=participant).select_related("trial", "scheme").first()
    return allocation, arm_view(user, allocation)


def can_randomize(user: Any, participant: Participant) -> bool:
    return bool(role_for(user, Capability.RANDOMIZE, trial_id=participant.trial_id, site_id=participant.site_id))


# --- Scheme and balance ---------------------------------------------------------------


def _trial_for(user: Any, pk: int, capability: Capability) -> Trial:
    require_capability(user, capability)
    # Scheme and balance are trial-wide facts: a trial-wide membership is needed.
    trial_ids = {m.trial_id for m in memberships_of(user) if role_can(m.role, capability) and m.site_id is None}
    trial = Trial.objects.filter(pk=pk, id__in=trial_ids).first()
    if trial is None:
        raise Http404("No such trial.")
    return trial


def schemes(user: Any, trial_pk: int) -> tuple[Trial, QuerySet[RandomizationScheme]]:
    """Every scheme version of a trial, for those who configure or oversee it."""
    try:
        trial = _trial_for(user, trial_pk, Capability.CONFIGURE_RANDOMIZATION)
    except (PermissionDenied, Http404):
        trial = _trial_for(user, trial_pk, Capability.VIEW_BALANCE)
    return trial, RandomizationScheme.objects.filter(trial=trial).select_related("protocol_version").order_by(
        "-version"
    )


def active_scheme(trial: Trial) -> RandomizationScheme | None:
    return RandomizationScheme.objects.filter(trial=trial).filter(status=SchemeStatus.ACTIVE).first()


@dataclass(frozen=True)
class BalanceRow:
    group: str  # a stratum, or "factor=level" for a margin
    ai_assisted: int
    specialist_only: int

    @property
    def total(self) -> int:
        return self.ai_assisted + self.specialist_only

    @property
    def difference(self) -> int:
        return self.ai_assisted - self.specialist_only


@dataclass(frozen=True)
class Balance:
    trial: Trial
    overall: BalanceRow
    strata: list[BalanceRow]
    margins: list[BalanceRow]


def balance(user: Any, trial_pk: int) -> Balance:
    """Arm counts overall, per stratum and per factor level (unblinded roles)."""
    trial = _trial_for(user, trial_pk, Capability.VIEW_BALANCE)
    allocations = list(Allocation.objects.filter(trial=trial).values_list("stratum", "arm", "details__levels"))
    by_stratum: dict[str, dict[str, int]] = {}
    by_level: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {Arm.AI_ASSISTED: 0, Arm.SPECIALIST_ONLY: 0}
    for stratum, arm, levels in allocations:
        totals[arm] += 1
        by_stratum.setdefault(stratum, {}).setdefault(arm, 0)
        by_stratum[stratum][arm] += 1
        for factor, level in (levels or {}).items():
            key = f"{factor}={level}"
            by_level.setdefault(key, {}).setdefault(arm, 0)
            by_level[key][arm] += 1

    def row(group: str, counts: dict[str, int]) -> BalanceRow:
        return BalanceRow(group, counts.get(Arm.AI_ASSISTED, 0), counts.get(Arm.SPECIALIST_ONLY, 0))

    return Balance(
        trial=trial,
        overall=row("all", totals),
        strata=[row(group, counts) for group, counts in sorted(by_stratum.items())],
        margins=[row(group, counts) for group, counts in sorted(by_level.items())],
    )


def randomized_per_site(user: Any) -> dict[int, int]:
    """Participants randomized per site (no arms): open information."""
    require_capability(user, Capability.VIEW_RECRUITMENT)
    site_ids = list(sites_for(user, Capability.VIEW_RECRUITMENT).values_list("pk", flat=True))
    rows = Allocation.objects.filter(site_id__in=site_ids).values("site_id").annotate(n=Count("id"))
    return {row["site_id"]: row["n"] for row in rows}


def unblindings(user: Any) -> QuerySet[Unblinding]:
    """The emergency unblindings the DSMB, monitors and admins review."""
    require_capability(user, Capability.VIEW_UNBLINDINGS)
    condition = scope_filter(
        user, Capability.VIEW_UNBLINDINGS, trial_field="allocation__trial", site_field="allocation__site"
    )
    return (
        Unblinding.objects.filter(condition)
        .select_related("allocation__participant", "allocation__trial", "revealed_to", "requested_by")
        .order_by("-created_at")
    )


def allocations_visible(user: Any) -> QuerySet[Allocation]:
    """Allocations whose real arm the user may see (for lists and exports)."""
    return Allocation.objects.filter(
        scope_filter(user, Capability.VIEW_ARM) | Q(unblindings__revealed_to=user)
    ).distinct()
