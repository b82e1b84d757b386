"""Reads that carry trial and site scoping: the one place that decides who may
see what. Pages, the API and exports all read through these functions.

Answers follow trial.permissions: no capability anywhere → PermissionDenied
(403); an object outside the member's scope → Http404.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from trial.models import (
    AuditEvent,
    Membership,
    Participant,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Site,
    Trial,
)
from trial.permissions import Capability, role_can

_CACHE_ATTRIBUTE = "_consilium_memberships"


def memberships_of(user: Any) -> list[Membership]:
    """The user's active memberships, read once per request (cached on the user)."""
    if user is None or not user.is_authenticated:
        return []
    cached: list[Membership] | None = getattr(user, _CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = list(Membership.objects.filter(user=user, active=True).select_related("trial", "site"))
        setattr(user, _CACHE_ATTRIBUTE, cached)
    return cached


def forget_memberships(user: Any) -> None:
    if user is not None and hasattr(user, _CACHE_ATTRIBUTE):
        delattr(user, _CACHE_ATTRIBUTE)


def has_capability(user: Any, capability: Capability) -> bool:
    return any(role_can(m.role, capability) for m in memberships_of(user))


def require_capability(user: Any, capability: Capability) -> None:
    if not has_capability(user, capability):
        raise PermissionDenied("Your role does not give access to this.")


def scope_filter(user: Any, capability: Capability, *, trial_field: str = "trial", site_field: str = "site") -> Q:
    """A filter matching rows in the trials and sites where the user holds
    `capability`. Matches nothing when the user holds it nowhere."""
    condition = Q(pk__in=[])
    for membership in memberships_of(user):
        if not role_can(membership.role, capability):
            continue
        if membership.site_id is None:
            condition |= Q(**{f"{trial_field}_id": membership.trial_id})
        else:
            condition |= Q(**{f"{trial_field}_id": membership.trial_id, f"{site_field}_id": membership.site_id})
    return condition


def role_for(user: Any, capability: Capability, *, trial_id: int, site_id: int | None) -> str | None:
    """The role under which the user may do `capability` at this trial and
    site, or None. A site-specific membership is preferred for the record."""
    candidates = [
        m
        for m in memberships_of(user)
        if m.trial_id == trial_id
        and role_can(m.role, capability)
        and (m.site_id is None or (site_id is not None and m.site_id == site_id))
    ]
    if not candidates:
        return None
    candidates.sort(key=lambda m: m.site_id is None)
    return candidates[0].role


def roles_in(user: Any, trial_id: int) -> set[str]:
    return {m.role for m in memberships_of(user) if m.trial_id == trial_id}


# --- Trials and sites -----------------------------------------------------------


def trials_visible(user: Any) -> QuerySet[Trial]:
    trial_ids = {m.trial_id for m in memberships_of(user)}
    return Trial.objects.filter(id__in=trial_ids).order_by("code")


def trial_get(user: Any, pk: int) -> Trial:
    trial = trials_visible(user).filter(pk=pk).first()
    if trial is None:
        raise Http404("No such trial.")
    return trial


def sites_for(user: Any, capability: Capability) -> QuerySet[Site]:
    condition = Q(pk__in=[])
    for membership in memberships_of(user):
        if not role_can(membership.role, capability):
            continue
        if membership.site_id is None:
            condition |= Q(trial_id=membership.trial_id)
        else:
            condition |= Q(pk=membership.site_id)
    return Site.objects.filter(condition).select_related("trial").order_by("trial__code", "code")


def site_get(user: Any, pk: int, capability: Capability) -> Site:
    require_capability(user, capability)
    site = sites_for(user, capability).filter(pk=pk).first()
    if site is None:
        raise Http404("No such site.")
    return site


# --- Screening and participants -----------------------------------------------


def screening_entries(user: Any, *, site_id: int | None = None, status: str | None = None) -> QuerySet[ScreeningEntry]:
    require_capability(user, Capability.VIEW_PARTICIPANTS)
    queryset = ScreeningEntry.objects.filter(scope_filter(user, Capability.VIEW_PARTICIPANTS))
    if site_id is not None:
        queryset = queryset.filter(site_id=site_id)
    if status:
        queryset = queryset.filter(status=status)
    return queryset.select_related(
        "trial", "site", "eligibility__protocol_version", "eligibility__assessed_by", "participant"
    )


def screening_get(user: Any, pk: int) -> ScreeningEntry:
    entry = screening_entries(user).filter(pk=pk).first()
    if entry is None:
        raise Http404("No such screening entry.")
    return entry


def participants(user: Any, *, site_id: int | None = None, search: str = "") -> QuerySet[Participant]:
    require_capability(user, Capability.VIEW_PARTICIPANTS)
    queryset = Participant.objects.filter(scope_filter(user, Capability.VIEW_PARTICIPANTS))
    if site_id is not None:
        queryset = queryset.filter(site_id=site_id)
    if search:
        queryset = queryset.filter(study_id__icontains=search.strip())
    return queryset.select_related("trial", "site", "screening")


def participant_get(user: Any, pk: int) -> Participant:
    participant = participants(user).filter(pk=pk).first()
    if participant is None:
        raise Http404("No such participant.")
    return participant


def can_see_reference_standard(user: Any, participant: Participant) -> bool:
    return (
        role_for(user, Capability.VIEW_REFERENCE_STANDARD, trial_id=participant.trial_id, site_id=participant.site_id)
        is not None
    )


def reference_results(user: Any, participant: Participant) -> QuerySet[ReferenceStandardResult]:
    if not can_see_reference_standard(user, participant):
        raise PermissionDenied("Your role does not see reference-standard results.")
    return participant.reference_results.select_related("recorded_by").order_by("sample_date", "id")


def reference_result_get(user: Any, participant: Participant, pk: int) -> ReferenceStandardResult:
    result = reference_results(user, participant).filter(pk=pk).first()
    if result is None:
        raise Http404("No such reference-standard result.")
    return result


# Event kinds hidden from roles that may not see what they describe.
_REFERENCE_OBJECT_TYPE = ReferenceStandardResult._meta.label_lower
# Events that carry an arm (allocation, unblinding): only for roles that see arms.
ARM_OBJECT_TYPES = ("randomization.allocation", "randomization.unblinding")
# Events of AI results and of reading (they reveal the AI output, the arm
# through the sequential design, and other readers' reads): for the roles
# that audit the trail only.
AUDITED_ONLY_OBJECT_TYPES = ("ai_engine.airesult", "readings.readingtask", "readings.read", "readings.aidisplay")


def _visible_events(user: Any, events: QuerySet[AuditEvent], *, trial_id: int, site_id: int) -> QuerySet[AuditEvent]:
    if role_for(user, Capability.VIEW_REFERENCE_STANDARD, trial_id=trial_id, site_id=site_id) is None:
        events = events.exclude(object_type=_REFERENCE_OBJECT_TYPE)
    if role_for(user, Capability.VIEW_ARM, trial_id=trial_id, site_id=site_id) is None:
        events = events.exclude(object_type__in=ARM_OBJECT_TYPES)
    if role_for(user, Capability.VIEW_AUDIT, trial_id=trial_id, site_id=site_id) is None:
        events = events.exclude(object_type__in=AUDITED_ONLY_OBJECT_TYPES)
    return events.order_by("sequence")


def participant_timeline(user: Any, participant: Participant) -> QuerySet[AuditEvent]:
    """The participant's history, screening onwards, as audit events, without
    the events the user's role may not see."""
    events = AuditEvent.objects.filter(screening_id=participant.screening_id)
    return _visible_events(user, events, trial_id=participant.trial_id, site_id=participant.site_id)


def screening_timeline(user: Any, entry: ScreeningEntry) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(screening_id=entry.pk)
    return _visible_events(user, events, trial_id=entry.trial_id, site_id=entry.site_id)


# --- Audit trail ----------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    trial_id: int | None = None
    site_id: int | None = None
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None


def audit_events(user: Any, filters: AuditFilters | None = None) -> QuerySet[AuditEvent]:
    """Events of the trials and sites where the user may read the trail.
    A site-scoped monitor sees that site's events only; trial-wide events
    (set-up, memberships) need a trial-wide membership."""
    require_capability(user, Capability.VIEW_AUDIT)
    queryset = AuditEvent.objects.filter(scope_filter(user, Capability.VIEW_AUDIT)).select_related("trial", "site")
    filters = filters or AuditFilters()
    if filters.trial_id:
        queryset = queryset.filter(trial_id=filters.trial_id)
    if filters.site_id:
        queryset = queryset.filter(site_id=filters.site_id)
    if filters.actor:
        queryset = queryset.filter(actor_username__icontains=filters.actor)
    if filters.action:
        queryset = queryset.filter(action__icontains=filters.action)
    if filters.object_type:
        queryset = queryset.filter(object_type=filters.object_type)
    if filters.object_id:
        queryset = queryset.filter(object_id=filters.object_id)
    if filters.date_from:
        queryset = queryset.filter(occurred_at__date__gte=filters.date_from)
    if filters.date_to:
        queryset = queryset.filter(occurred_at__date__lte=filters.date_to)
    return queryset.order_by("-sequence")


# --- Recruitment ----------------------------------------------------------------


@dataclass(frozen=True)
class SiteRecruitment:
    trial: Trial
    site: Site
    screened: int
    eligible: int
    ineligible: int
    consented: int
    withdrawn: int

    @property
    def target(self) -> int:
        return self.site.target_participants

    @property
    def percent_of_target(self) -> float | None:
        return round(100.0 * self.consented / self.target, 1) if self.target else None


_ELIGIBLE_STATUSES = [
    ScreeningStatus.ELIGIBLE,
    ScreeningStatus.DECLINED,
    ScreeningStatus.NOT_ENROLLED,
    ScreeningStatus.ENROLLED,
]


def recruitment_summary(user: Any) -> list[SiteRecruitment]:
    """Screened / eligible / consented / withdrawn per site, in two queries
    whatever the number of participants."""
    require_capability(user, Capability.VIEW_RECRUITMENT)
    sites = list(sites_for(user, Capability.VIEW_RECRUITMENT))
    site_ids = [site.pk for site in sites]
    screening_counts = {
        row["site_id"]: row
        for row in ScreeningEntry.objects.filter(site_id__in=site_ids)
        .values("site_id")
        .annotate(
            screened=Count("id"),
            eligible=Count("id", filter=Q(status__in=_ELIGIBLE_STATUSES)),
            ineligible=Count("id", filter=Q(status=ScreeningStatus.INELIGIBLE)),
        )
    }
    participant_counts = {
        row["site_id"]: row
        for row in Participant.objects.filter(site_id__in=site_ids)
        .values("site_id")
        .annotate(
            consented=Count("id"),
            withdrawn=Count(
                "id", filter=Q(follow_up_stopped=True) | Q(ai_processing_stopped=True) | Q(data_withdrawn=True)
            ),
        )
    }
    rows = []
    for site in sites:
        screening = screening_counts.get(site.pk, {})
        enrolled = participant_counts.get(site.pk, {})
        rows.append(
            SiteRecruitment(
                trial=site.trial,
                site=site,
                screened=screening.get("screened", 0),
                eligible=screening.get("eligible", 0),
                ineligible=screening.get("ineligible", 0),
                consented=enrolled.get("consented", 0),
                withdrawn=enrolled.get("withdrawn", 0),
            )
        )
    return rows


def exclusion_reason_counts(user: Any) -> list[tuple[str, int]]:
    """Why screened people were not enrolled, most frequent first (CONSORT)."""
    counts: dict[str, int] = {}
    for reasons in screening_entries(user).exclude(exclusion_reasons=[]).values_list("exclusion_reasons", flat=True):
        for reason in reasons:
            counts[reason.get("text", "")] = counts.get(reason.get("text", ""), 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def staff_at_site(site: Site, roles: tuple[str, ...] = (Role.COORDINATOR, Role.CLINICIAN_READER)) -> QuerySet[Any]:
    """Users who may take consent at a site."""
    from django.contrib.auth import get_user_model

    return (
        get_user_model()
        .objects.filter(
            Q(memberships__site=site) | Q(memberships__site__isnull=True, memberships__trial_id=site.trial_id),
            memberships__role__in=roles,
            memberships__active=True,
            is_active=True,
        )
        .distinct()
        .order_by("username")
    )
