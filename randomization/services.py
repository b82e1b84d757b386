"""Every write of the randomization app: scheme set-up, activation (the seed
commitment), allocation, table import, emergency unblinding, seed reveal.
Each checks its rules and records an audit event in the same transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from randomization import algorithms
from randomization.models import (
    Allocation,
    AllocationTableEntry,
    Arm,
    ImbalanceMeasure,
    Method,
    RandomizationScheme,
    SchemeSecret,
    SchemeStatus,
    SequenceSource,
    StratumSequence,
    Unblinding,
)
from randomization.signals import participant_randomized
from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, RuleViolation
from trial.models import (
    AuditChainHead,
    AuditEvent,
    Consent,
    Participant,
    ProtocolVersion,
    ScreeningStatus,
    Trial,
    TrialStatus,
)
from trial.permissions import Capability
from trial.services.checks import authorize, require_reason
from trial.statements import Statement, execute_together, insert_statement, quoted_table, reserve_primary_keys

BUILT_IN_FACTORS = ("site", "indication")
# The level of a covariate defined for the other indication (e.g. HPV status
# for a thyroid participant), so that schemes may stratify on both.
NOT_APPLICABLE = "n/a"
CONFIRMATION_WORD = "UNBLIND"

# --- Scheme set-up ------------------------------------------------------------------


def _check_factors(trial: Trial, factors: list[str], weights: dict[str, float]) -> None:
    known = set(BUILT_IN_FACTORS) | {c["name"] for c in trial.stratification_covariates}
    unknown = [f for f in factors if f not in known]
    if unknown:
        raise RuleViolation(
            f"Unknown factors: {', '.join(unknown)}. Choose from {', '.join(sorted(known))}.", field="factors"
        )
    if len(set(factors)) != len(factors):
        raise RuleViolation("A factor is listed twice.", field="factors")
    for name, weight in weights.items():
        if name not in factors:
            raise RuleViolation(f"Weight given for {name!r}, which is not a factor.", field="factor_weights")
        if not isinstance(weight, int | float) or weight <= 0:
            raise RuleViolation(f"The weight of {name!r} must be a positive number.", field="factor_weights")


@transaction.atomic
def scheme_configure(
    *,
    actor: Actor,
    trial: Trial,
    method: str,
    factors: list[str],
    protocol_version: ProtocolVersion | None = None,
    ratio: tuple[int, int] = (1, 1),
    block_sizes: list[int] | None = None,
    factor_weights: dict[str, float] | None = None,
    imbalance_measure: str = algorithms.RANGE,
    minimization_probability: float = 0.8,
    low_table_warning: int = 10,
    reason: str = "",
) -> RandomizationScheme:
    """Define the next version of the trial's scheme (a draft until
    activated). Replacing a scheme already in use needs a new protocol
    version and a reason."""
    role = authorize(actor, Capability.CONFIGURE_RANDOMIZATION, trial=trial, site=None)
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    if method not in Method.values:
        raise RuleViolation(f"Unknown method {method!r}; choose one of {', '.join(Method.values)}.", field="method")
    if imbalance_measure not in ImbalanceMeasure.values:
        raise RuleViolation("The imbalance measure must be 'range' or 'variance'.", field="imbalance_measure")
    try:
        scheme_ratio = algorithms.Ratio(*ratio)
        sizes = (
            algorithms.validate_block_sizes(block_sizes or [], scheme_ratio) if method == Method.PERMUTED_BLOCKS else []
        )
    except (TypeError, ValueError) as error:
        raise RuleViolation(str(error), field="block_sizes") from error
    if method == Method.MINIMIZATION and not factors:
        raise RuleViolation("Minimization needs at least one factor.", field="factors")
    if not 0.5 <= minimization_probability <= 1.0:
        raise RuleViolation(
            "The minimization probability must lie between 0.5 and 1.", field="minimization_probability"
        )
    weights = factor_weights or {}
    _check_factors(trial, factors, weights)
    protocol = protocol_version or trial.protocol_versions.order_by("-effective_date", "-id").first()
    if protocol is None or protocol.trial_id != trial.pk:
        raise RuleViolation("The scheme must belong to a protocol version of this trial.", field="protocol_version")
    active = RandomizationScheme.objects.filter(trial=trial).filter(status=SchemeStatus.ACTIVE).first()
    if active is not None:
        reason = require_reason(reason, "change a randomization scheme already in use")
        if protocol.pk == active.protocol_version_id:
            raise RuleViolation(
                "A scheme in use can only change with a new protocol version "
                f"(the active scheme belongs to protocol v{active.protocol_version.version}).",
                field="protocol_version",
            )
    # A previous draft is replaced by the new one.
    RandomizationScheme.objects.filter(trial=trial).filter(status=SchemeStatus.DRAFT).update(
        status=SchemeStatus.SUPERSEDED
    )
    latest = RandomizationScheme.objects.filter(trial=trial).order_by("-version").first()
    scheme = RandomizationScheme.objects.create(
        trial=trial,
        version=(latest.version + 1) if latest else 1,
        protocol_version=protocol,
        method=method,
        ratio_ai_assisted=scheme_ratio.ai_assisted,
        ratio_specialist_only=scheme_ratio.specialist_only,
        block_sizes=sizes,
        factors=factors,
        factor_weights={f: float(weights.get(f, 1.0)) for f in factors},
        imbalance_measure=imbalance_measure,
        minimization_probability=minimization_probability,
        low_table_warning=low_table_warning,
        change_reason=reason.strip(),
    )
    SchemeSecret.objects.create(scheme=scheme, seed_hex=secrets.token_bytes(32).hex())
    audit.record(
        actor=actor,
        role=role,
        action="randomization.configure",
        obj=scheme,
        trial=trial,
        after=audit.snapshot(scheme, _PUBLIC_SCHEME_FIELDS),
        reason=reason.strip(),
    )
    return scheme


_PUBLIC_SCHEME_FIELDS = [
    "version",
    "protocol_version",
    "method",
    "ratio_ai_assisted",
    "ratio_specialist_only",
    "block_sizes",
    "factors",
    "factor_weights",
    "imbalance_measure",
    "minimization_probability",
    "source",
    "table_sha256",
    "status",
    "seed_commitment",
]


@dataclass(frozen=True)
class TableImport:
    rows: int
    strata: int
    sha256: str


@transaction.atomic
def allocation_table_import(*, actor: Actor, scheme: RandomizationScheme, content: bytes) -> TableImport:
    """Load an externally generated allocation table (CSV: a `sequence`
    column, an `arm` column and one column per stratification factor) into a
    draft scheme. Its sha256 is committed when the scheme is activated."""
    role = authorize(actor, Capability.CONFIGURE_RANDOMIZATION, trial=scheme.trial, site=None)
    scheme = RandomizationScheme.objects.select_for_update().get(pk=scheme.pk)
    if scheme.status != SchemeStatus.DRAFT:
        raise Conflict("An allocation table can only be loaded into a draft scheme.")
    if scheme.method == Method.MINIMIZATION:
        raise RuleViolation("Minimization allocates dynamically; it takes no allocation table.")
    rows = _parse_table(scheme, content)
    scheme.table_entries.all().delete()
    AllocationTableEntry.objects.bulk_create(
        AllocationTableEntry(scheme=scheme, stratum=stratum, position=position, arm=arm)
        for stratum, position, arm in rows
    )
    digest = hashlib.sha256(content).hexdigest()
    scheme.source = SequenceSource.TABLE
    scheme.table_sha256 = digest
    scheme.save(update_fields=["source", "table_sha256"])
    strata = len({stratum for stratum, _, _ in rows})
    audit.record(
        actor=actor,
        role=role,
        action="randomization.import_table",
        obj=scheme,
        trial=scheme.trial,
        after={"rows": len(rows), "strata": strata, "table_sha256": digest},
    )
    return TableImport(rows=len(rows), strata=strata, sha256=digest)


def _expected_strata(scheme: RandomizationScheme) -> set[str]:
    """Every combination of factor levels the trial can produce. A covariate
    of one indication is 'not applicable' for the other's participants."""
    trial = scheme.trial
    sites = list(trial.sites.filter(active=True).values_list("code", flat=True))
    strata: set[str] = set()
    for indication in trial.indications:
        levels: dict[str, list[str]] = {"site": sites, "indication": [indication]}
        for covariate in trial.stratification_covariates:
            applies = covariate.get("indication") in (None, indication)
            levels[covariate["name"]] = list(covariate["choices"]) if applies else [NOT_APPLICABLE]
        combinations: list[dict[str, str]] = [{}]
        for factor in scheme.factors:
            combinations = [{**combo, factor: level} for combo in combinations for level in levels[factor]]
        strata |= {algorithms.stratum_key(combo, scheme.factors) for combo in combinations}
    return strata


def _parse_table(scheme: RandomizationScheme, content: bytes) -> list[tuple[str, int, str]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RuleViolation("The allocation table is not UTF-8 text.", field="file") from error
    reader = csv.DictReader(io.StringIO(text))
    needed = {"sequence", "arm", *scheme.factors}
    header = set(reader.fieldnames or [])
    if not needed <= header:
        raise RuleViolation(f"The table lacks the columns: {', '.join(sorted(needed - header))}.", field="file")
    rows: list[tuple[str, int, str]] = []
    seen: set[tuple[str, int]] = set()
    for line_number, record in enumerate(reader, start=2):
        arm = (record.get("arm") or "").strip()
        if arm not in Arm.values:
            raise RuleViolation(
                f"Line {line_number}: unknown arm {arm!r}; use {' or '.join(Arm.values)}.", field="file"
            )
        try:
            position = int((record.get("sequence") or "").strip())
        except ValueError as error:
            raise RuleViolation(
                f"Line {line_number}: the sequence number is not a whole number.", field="file"
            ) from error
        if position < 1:
            raise RuleViolation(f"Line {line_number}: sequence numbers start at 1.", field="file")
        stratum = algorithms.stratum_key({f: (record.get(f) or "").strip() for f in scheme.factors}, scheme.factors)
        if (stratum, position) in seen:
            raise RuleViolation(
                f"Line {line_number}: sequence number {position} appears twice in stratum {stratum}.", field="file"
            )
        seen.add((stratum, position))
        rows.append((stratum, position, arm))
    if not rows:
        raise RuleViolation("The allocation table has no rows.", field="file")
    present = {stratum for stratum, _, _ in rows}
    unknown = sorted(present - _expected_strata(scheme))
    if unknown:
        raise RuleViolation(f"The table names strata the trial does not have: {', '.join(unknown[:5])}.", field="file")
    missing = sorted(_expected_strata(scheme) - present)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RuleViolation(f"The table has no rows for the strata: {shown}.", field="file")
    for stratum in present:
        positions = sorted(p for s, p, _ in rows if s == stratum)
        if positions != list(range(1, len(positions) + 1)):
            raise RuleViolation(f"Sequence numbers of stratum {stratum} have gaps.", field="file")
    return rows


@transaction.atomic
def scheme_activate(*, actor: Actor, trial: Trial) -> RandomizationScheme:
    """Lock the trial's draft scheme and commit to its seed (and table): the
    sha256 goes into the audit trail now, the seed itself only after
    unblinding, so anyone can then check every allocation."""
    role = authorize(actor, Capability.CONFIGURE_RANDOMIZATION, trial=trial, site=None)
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    draft = (
        RandomizationScheme.objects.filter(trial=trial).filter(status=SchemeStatus.DRAFT).order_by("-version").first()
    )
    if draft is None:
        raise RuleViolation("There is no draft randomization scheme to activate.")
    # Locked: allocations under way hold its row until they commit, so the
    # counter carried over below already counts them.
    previous = (
        RandomizationScheme.objects.select_for_update().filter(trial=trial).filter(status=SchemeStatus.ACTIVE).first()
    )
    if previous is not None:
        previous.status = SchemeStatus.SUPERSEDED
        previous.save(update_fields=["status"])
        draft.allocations_made = previous.allocations_made
    draft.status = SchemeStatus.ACTIVE
    draft.seed_commitment = algorithms.commitment(draft.secret.seed)
    draft.activated_at = timezone.now()
    draft.save(update_fields=["status", "seed_commitment", "activated_at", "allocations_made"])
    audit.record(
        actor=actor,
        role=role,
        action="randomization.commit",
        obj=draft,
        trial=trial,
        before={"active_version": previous.version} if previous else None,
        after=audit.snapshot(draft, _PUBLIC_SCHEME_FIELDS),
    )
    return draft


@transaction.atomic
def scheme_reveal_seed(*, actor: Actor, trial: Trial, reason: str) -> list[RandomizationScheme]:
    """After the trial is completed and unblinded, publish every seed in the
    audit trail so each allocation can be regenerated and checked."""
    role = authorize(actor, Capability.CONFIGURE_RANDOMIZATION, trial=trial, site=None)
    reason = require_reason(reason, "reveal the randomization seed")
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    if trial.status != TrialStatus.COMPLETED:
        raise RuleViolation("The seed is revealed only once the trial is completed.")
    schemes = list(
        RandomizationScheme.objects.filter(trial=trial).exclude(status=SchemeStatus.DRAFT).exclude(seed_commitment="")
    )
    revealed = []
    for scheme in schemes:
        if scheme.seed_revealed_at is not None:
            continue
        scheme.seed_revealed_at = timezone.now()
        scheme.save(update_fields=["seed_revealed_at"])
        audit.record(
            actor=actor,
            role=role,
            action="randomization.reveal_seed",
            obj=scheme,
            trial=trial,
            after={"seed": scheme.secret.seed_hex, "seed_commitment": scheme.seed_commitment},
            reason=reason,
        )
        revealed.append(scheme)
    if not revealed:
        raise Conflict("Every seed of this trial has already been revealed.")
    return revealed


# --- Allocation ----------------------------------------------------------------------------


def participant_levels(participant: Participant, factors: list[str]) -> dict[str, str]:
    values = {"site": participant.site.code, "indication": participant.indication, **participant.covariates}
    for covariate in participant.trial.stratification_covariates:
        if covariate.get("indication") not in (None, participant.indication):
            values.setdefault(covariate["name"], NOT_APPLICABLE)
    missing = [f for f in factors if f not in values or values[f] in (None, "")]
    if missing:
        raise RuleViolation(f"{participant.study_id} has no value for: {', '.join(missing)}.")
    return {f: str(values[f]) for f in factors}


@dataclass(frozen=True)
class RandomizationResult:
    allocation: Allocation
    created: bool
    warnings: list[str]


def _check_can_be_randomized(participant: Participant, *, has_consent: bool) -> None:
    if participant.screening.status != ScreeningStatus.ENROLLED or not has_consent:
        raise RuleViolation(f"{participant.study_id} has not consented; only enrolled participants are randomized.")
    eligibility = getattr(participant.screening, "eligibility", None)
    if eligibility is None or not eligibility.is_eligible:
        raise RuleViolation(f"{participant.study_id} is not confirmed eligible.")
    if participant.is_withdrawn:
        raise RuleViolation(
            f"{participant.study_id} has withdrawn ({participant.status_label.lower()}); not randomized."
        )
    if participant.trial.status != TrialStatus.RECRUITING:
        raise RuleViolation(
            f"Recruitment is not open for trial {participant.trial.code} "
            f"(status: {participant.trial.get_status_display()})."
        )


@transaction.atomic
def participant_randomize(*, actor: Actor, participant: Participant) -> RandomizationResult:
    """Allocate an enrolled participant exactly once. A repeated request
    returns the first allocation.

    Everything that can run side by side runs first: permission, the
    participant's row lock and checks, the scheme, the stratum. Then the
    trial's allocations queue, in arrival order, for a short section: the
    stratum's row lock, the arm, and three round trips that number the
    allocation (scheme counter), chain its audit event (chain head) and write
    them. Row locks are taken in one order — participant, stratum, scheme,
    audit chain head — so positions within a stratum and sequence numbers
    across the trial have no gaps and no duplicates."""
    role = authorize(actor, Capability.RANDOMIZE, trial=participant.trial, site=participant.site)
    participant = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("trial", "site", "screening__eligibility")
        .annotate(has_consent=Exists(Consent.objects.filter(participant=OuterRef("pk"))))
        .get(pk=participant.pk)
    )
    # A statement of its own, after the lock: a request that waited for the
    # lock must see the allocation its predecessor committed (the statement
    # that waited still reads with its older snapshot).
    if Allocation.objects.filter(participant=participant).exists():
        return RandomizationResult(Allocation.objects.get(participant=participant), False, [])
    _check_can_be_randomized(participant, has_consent=participant.has_consent)
    # Read without a lock: numbering below re-checks, under the scheme's row
    # lock, that this version is still the active one.
    scheme = (
        RandomizationScheme.objects.select_related("secret")
        .filter(trial=participant.trial, status=SchemeStatus.ACTIVE)
        .first()
    )
    if scheme is None:
        raise RuleViolation(f"Trial {participant.trial.code} has no active randomization scheme.")
    levels = participant_levels(participant, scheme.factors)
    # Minimization balances the factors' margins over one trial-wide
    # sequence; blocks and simple randomization run one sequence per stratum.
    stratum = "all" if scheme.method == Method.MINIMIZATION else algorithms.stratum_key(levels, scheme.factors)
    allocation = Allocation(
        participant=participant,
        trial=participant.trial,
        site=participant.site,
        scheme=scheme,
        stratum=stratum,
        details={"levels": levels},
        allocated_by=actor.user,
    )

    # From here on the trial's allocations queue (see ADVISORY_LOCK_NAMESPACE).
    allocation_id, event_id = reserve_primary_keys(
        Allocation, AuditEvent, advisory_lock=(ADVISORY_LOCK_NAMESPACE, scheme.trial_id)
    )
    allocation.id = allocation_id
    sequence = _lock_stratum(scheme, stratum)
    allocation.stratum_position = sequence.next_position
    allocation.arm, warnings = _draw_arm(scheme, sequence, allocation)
    allocation.sequence_number, audit_sequence, previous_hash = _number_allocation(scheme)
    allocation.allocated_at = timezone.now()
    statements = [_stratum_update_statement(sequence)]
    if allocation.pk is None:  # no sequence to reserve a key from: insert now to learn it
        allocation.save(force_insert=True)
    else:
        statements.append(insert_statement(allocation))
    event = audit.build_event(
        actor=actor,
        role=role,
        action="randomization.allocate",
        obj=allocation,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        after={
            "arm": allocation.arm,
            "stratum": stratum,
            "stratum_position": allocation.stratum_position,
            "sequence_number": allocation.sequence_number,
            "scheme_version": scheme.version,
            "method": scheme.method,
        },
    )
    audit.seal_event(event, sequence=audit_sequence, previous_hash=previous_hash)
    if event_id is None:
        execute_together(statements)
        event.save(force_insert=True)
        statements = []
    else:
        event.id = event_id
        statements.append(insert_statement(event))
    try:
        execute_together([*statements, audit.head_update_statement(event)])
    except IntegrityError as error:  # pragma: no cover - the locks above make this unreachable
        raise Conflict(f"{participant.study_id} was randomized by a concurrent request.") from error
    participant_randomized.send(sender=Allocation, allocation=allocation)
    return RandomizationResult(allocation, True, warnings)


# The first key of the PostgreSQL advisory lock that makes a trial's
# concurrent allocations wait in arrival order (the second is the trial's
# id): its waiters queue first come, first served, whereas the waiters for a
# row lock all wake when it is released and race for it, so under load a few
# requests would wait many times longer than the rest. SQLite already runs
# one writing transaction at a time.
ADVISORY_LOCK_NAMESPACE = 0x52414E44  # "RAND"


def _lock_stratum(scheme: RandomizationScheme, stratum: str) -> StratumSequence:
    """The stratum's sequence row, locked; created on first use. Two first
    requests of a new stratum may both insert: the conflict is ignored and
    both then queue for the one row."""
    sequence = StratumSequence.objects.select_for_update().filter(scheme=scheme, stratum=stratum).first()
    if sequence is None:
        StratumSequence.objects.bulk_create([StratumSequence(scheme=scheme, stratum=stratum)], ignore_conflicts=True)
        sequence = StratumSequence.objects.select_for_update().get(scheme=scheme, stratum=stratum)
    return sequence


def _draw_arm(scheme: RandomizationScheme, sequence: StratumSequence, allocation: Allocation) -> tuple[str, list[str]]:
    """The arm at the stratum's next position, advancing `sequence` (saved
    by the caller)."""
    seed = scheme.secret.seed
    position = sequence.next_position
    warnings: list[str] = []
    if scheme.source == SequenceSource.TABLE:
        arm, warnings = _next_table_arm(scheme, sequence.stratum, position)
        sequence.next_position += 1
    elif scheme.method == Method.PERMUTED_BLOCKS:
        cursor = algorithms.BlockCursor(sequence.next_position, sequence.block_index, sequence.block_start)
        arm = algorithms.next_block_arm(seed, sequence.stratum, scheme.ratio, scheme.block_sizes, cursor)
        sequence.next_position, sequence.block_index, sequence.block_start = (
            cursor.next_position,
            cursor.block_index,
            cursor.block_start,
        )
        allocation.details["block_index"] = cursor.block_index
    elif scheme.method == Method.SIMPLE:
        arm = algorithms.simple_arm(seed, sequence.stratum, position, scheme.ratio)
        sequence.next_position += 1
    else:
        # Under the "all" row's lock every earlier allocation has committed,
        # so the counter and the margins read now are the current ones.
        made = RandomizationScheme.objects.values_list("allocations_made", flat=True).get(pk=scheme.pk)
        choice = algorithms.minimization_arm(
            counts=_marginal_counts(scheme),
            levels=allocation.details["levels"],
            weights=scheme.factor_weights,
            ratio=scheme.ratio,
            measure=scheme.imbalance_measure,
            probability=scheme.minimization_probability,
            draw=algorithms.uniform(seed, "minimization", made + 1),
        )
        arm = choice.arm
        allocation.details.update({"scores": choice.scores, "preferred": choice.preferred, "draw": choice.draw})
        sequence.next_position += 1
    return arm, warnings


def _stratum_update_statement(sequence: StratumSequence) -> Statement:
    return (
        f"UPDATE {quoted_table(StratumSequence)} SET next_position = %s, block_index = %s, block_start = %s "  # noqa: S608
        "WHERE id = %s",
        [sequence.next_position, sequence.block_index, sequence.block_start, sequence.pk],
    )


def _number_allocation(scheme: RandomizationScheme) -> tuple[int, int, str]:
    """The allocation's trial-wide sequence number, and its audit event's
    sequence number and previous hash: the scheme's counter is incremented
    (and its row locked until commit) and the audit chain head advanced, in
    one round trip on PostgreSQL. No scheme row means the scheme was
    superseded while this request was under way."""
    scheme_update = (
        f"UPDATE {quoted_table(RandomizationScheme)} SET allocations_made = allocations_made + 1 "  # noqa: S608
        "WHERE id = %s AND status = %s RETURNING allocations_made"
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH scheme AS ({scheme_update}), "  # noqa: S608
                f"head AS (UPDATE {quoted_table(AuditChainHead)} SET last_sequence = last_sequence + 1 "
                "WHERE id = 1 RETURNING last_sequence, last_hash) "
                "SELECT scheme.allocations_made, head.last_sequence, head.last_hash FROM scheme, head",
                [scheme.pk, SchemeStatus.ACTIVE],
            )
            row = cursor.fetchone()
        if row is not None:
            scheme.allocations_made = int(row[0])
            return int(row[0]), int(row[1]), str(row[2])
        # Either the scheme changed, or (only before any event was ever
        # recorded) the chain head does not exist yet: the slow path tells.
    with connection.cursor() as cursor:
        cursor.execute(scheme_update, [scheme.pk, SchemeStatus.ACTIVE])
        numbered = cursor.fetchone()
    if numbered is None:
        raise Conflict("The randomization scheme changed while this request was under way; please try again.")
    scheme.allocations_made = int(numbered[0])
    return (int(numbered[0]), *audit.advance_chain_head())


def _next_table_arm(scheme: RandomizationScheme, stratum: str, position: int) -> tuple[str, list[str]]:
    entry = (
        AllocationTableEntry.objects.select_for_update()
        .filter(scheme=scheme, stratum=stratum, position=position, used=False)
        .first()
    )
    if entry is None:
        raise RuleViolation(
            f"The allocation table has no entry left for stratum {stratum}; import a longer table "
            "(a new scheme version) before randomizing more participants."
        )
    entry.used = True
    entry.save(update_fields=["used"])
    remaining = AllocationTableEntry.objects.filter(scheme=scheme, stratum=stratum, used=False).count()
    warnings = []
    if remaining <= scheme.low_table_warning:
        warnings.append(f"Only {remaining} allocation(s) left in stratum {stratum} of the imported table.")
    return entry.arm, warnings


def _marginal_counts(scheme: RandomizationScheme) -> algorithms.MarginalCounts:
    """Allocations so far per factor level and arm, over every scheme version
    of the trial: the balance minimization looks at is the trial's."""
    counts = algorithms.MarginalCounts()
    for levels, arm in Allocation.objects.filter(trial_id=scheme.trial_id).values_list("details__levels", "arm"):
        counts.add({f: levels[f] for f in scheme.factors if levels and f in levels}, arm)
    return counts


# --- Emergency unblinding -------------------------------------------------------------------


@transaction.atomic
def allocation_unblind(
    *, actor: Actor, allocation: Allocation, revealed_to: User, reason: str, confirmation: str
) -> Unblinding:
    """Reveal one participant's arm to one person who is blind to it (e.g. the
    pathologist, for patient safety). Reason and typed confirmation needed."""
    role = authorize(actor, Capability.UNBLIND, trial=allocation.trial, site=allocation.site)
    reason = require_reason(reason, "unblind a participant")
    expected = f"{CONFIRMATION_WORD} {allocation.participant.study_id}"
    if confirmation.strip() != expected:
        raise RuleViolation(f"Type {expected!r} to confirm the unblinding.", field="confirmation")
    if not revealed_to.is_active or not revealed_to.memberships.filter(trial=allocation.trial, active=True).exists():
        raise RuleViolation("The person to unblind must be an active member of this trial.", field="revealed_to")
    if Unblinding.objects.filter(allocation=allocation, revealed_to=revealed_to).exists():
        raise Conflict(f"{allocation.participant.study_id} is already unblinded for {revealed_to.username}.")
    unblinding = Unblinding.objects.create(
        allocation=allocation, revealed_to=revealed_to, requested_by=actor.user, reason=reason
    )
    audit.record(
        actor=actor,
        role=role,
        action="randomization.unblind",
        obj=unblinding,
        trial=allocation.trial,
        site=allocation.site,
        screening=allocation.participant.screening,
        after={"participant": allocation.participant.study_id, "revealed_to": revealed_to.username},
        reason=reason,
    )
    return unblinding
