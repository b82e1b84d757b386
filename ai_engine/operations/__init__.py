"""The AI operations view for trial admins: what the inference pipeline is
doing for one trial, and whether what the AI says drifts over the 17 months
of the trial (a new ultrasound machine, a site whose images get worse).

Read-side only, like a selector module: who may see it (MANAGE_AI_MODELS in
the trial, 403 without it anywhere, 404 for another trial) and which sites
(the member's sites, all of them for a trial-wide membership) are decided
here. Every figure comes from a fixed number of queries whatever the number
of results: aggregates grouped in the database, percentiles in Python over
one window's rows. The randomization arm is never read: AI results exist for
both arms (the specialist-only arm runs in shadow mode), and operations staff
must not be able to tell the arms apart by what the AI said.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, Q
from django.http import Http404
from django.utils import timezone

from ai_engine.models import AiResult, AiResultStatus
from ai_engine.operations.broker import BROKER_TIMEOUT_SECONDS, broker_queue
from ai_engine.operations.figures import (
    FLAG_MIN_N,
    FLAG_STANDARD_ERRORS,
    RECENT_FAILURES,
    RECENT_RESULTS,
    abstention,
    devices,
    drift,
    failures,
    hosts,
    latency,
    percentile,
    reason_code,
    recent_results,
    z_score,
)
from ai_engine.operations.records import (
    Abstention,
    BrokerQueue,
    CategoryCount,
    DeviceLoad,
    Drift,
    DriftCell,
    FailureRow,
    HostLoad,
    Latency,
    Operations,
    ReasonCount,
    RecentResult,
    StatusCount,
)
from trial.errors import RuleViolation
from trial.models import Site, Trial
from trial.permissions import Capability, role_can
from trial.selectors import memberships_of, require_capability, sites_for

__all__ = [
    "FLAG_MIN_N",
    "FLAG_STANDARD_ERRORS",
    "LATENCY_WINDOWS",
    "MAX_WINDOW_DAYS",
    "RECENT_FAILURES",
    "RECENT_RESULTS",
    "Abstention",
    "BrokerQueue",
    "CategoryCount",
    "DeviceLoad",
    "Drift",
    "DriftCell",
    "FailureRow",
    "HostLoad",
    "Latency",
    "Operations",
    "ReasonCount",
    "RecentResult",
    "StatusCount",
    "broker_queue",
    "operations_summary",
    "operations_trials",
    "percentile",
    "reason_code",
    "z_score",
]

# Windows of the latency table (hours); a chosen window of days is added to them.
LATENCY_WINDOWS: tuple[tuple[str, float], ...] = (("last 24 h", 24.0), ("last 30 days", 30 * 24.0))
MAX_WINDOW_DAYS = 731


# --- Who may see it -----------------------------------------------------------------


def operations_trials(user: Any) -> list[Trial]:
    """The trials whose AI operations the user watches (trial admins);
    PermissionDenied for anyone else."""
    require_capability(user, Capability.MANAGE_AI_MODELS)
    trial_ids = {m.trial_id for m in memberships_of(user) if role_can(m.role, Capability.MANAGE_AI_MODELS)}
    return list(Trial.objects.filter(id__in=trial_ids).order_by("code"))


def _trial_and_sites(user: Any, trial_code: str) -> tuple[Trial, list[Site], bool]:
    """The trial and the sites of the user's AI-administering memberships in it."""
    require_capability(user, Capability.MANAGE_AI_MODELS)
    memberships = [
        m for m in memberships_of(user) if m.trial.code == trial_code and role_can(m.role, Capability.MANAGE_AI_MODELS)
    ]
    if not memberships:
        raise Http404("No such trial among those whose AI you administer.")
    trial = memberships[0].trial
    sites = list(sites_for(user, Capability.MANAGE_AI_MODELS).filter(trial_id=trial.pk))
    return trial, sites, any(m.site_id is None for m in memberships)


# --- The summary --------------------------------------------------------------------


def operations_summary(
    user: Any,
    *,
    trial_code: str,
    window_days: int | None = None,
    now: dt.datetime | None = None,
    broker_timeout: float = BROKER_TIMEOUT_SECONDS,
) -> Operations:
    """Everything the operations page shows for one trial, within the user's sites."""
    if window_days is not None and not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise RuleViolation(f"The window must be 1 to {MAX_WINDOW_DAYS} days.", field="days")
    trial, sites, all_sites = _trial_and_sites(user, trial_code)
    now = now or timezone.now()
    results = AiResult.objects.filter(image__trial=trial, image__site_id__in=[site.pk for site in sites])
    counts = results.aggregate(
        **{status: Count("id", filter=Q(status=status)) for status in AiResultStatus.values},
        outbox=Count("id", filter=Q(status=AiResultStatus.QUEUED, dispatched_at__isnull=True)),
        stale=Count("id", filter=Q(status=AiResultStatus.RUNNING, lease_expires_at__lt=now)),
    )
    windows = list(LATENCY_WINDOWS)
    if window_days is not None:
        windows.append((f"last {window_days} days (chosen)", window_days * 24.0))
    return Operations(
        trial=trial,
        sites=sites,
        all_sites=all_sites,
        computed_at=now,
        broker=broker_queue(timeout=broker_timeout),
        outbox=counts["outbox"],
        stale_running=counts["stale"],
        statuses=[StatusCount(value, str(label), counts[value]) for value, label in AiResultStatus.choices],
        latency=latency(results, windows=windows, now=now),
        abstention=abstention(results, done=counts[AiResultStatus.DONE], abstained=counts[AiResultStatus.ABSTAINED]),
        drift=drift(results, sites=sites),
        hosts=hosts(results, now=now),
        devices=devices(results, now=now),
        failures=failures(results),
        window_days=window_days,
        recent_results=recent_results(results),
    )
