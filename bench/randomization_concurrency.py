#!/usr/bin/env python
"""Benchmark: K concurrent clients randomize N distinct participants against
PostgreSQL through randomization.services.participant_randomize.

    python bench/randomization_concurrency.py [--clients 16] [--participants 1000]
        [--database-url postgres://postgres@127.0.0.1:5432/consilium_bench] [--threads]

The database named in the URL is dropped and created afresh, migrated, and
filled through the services with a recruiting trial (3 sites, both
indications, stratified permuted blocks of 2, 4 and 6 over site and
indication) and N enrolled participants. Then K forked processes (as K
web workers would be; with --threads, K threads of one process), released
together, each randomize their share (participant i goes to client i mod K),
reading each participant afresh as a request would. Only this concurrent
phase is timed; the latencies are those of the service call.

Prints throughput, p50/p95/p99 latency of the service call, duplicates
(participants allocated twice, sequence numbers or stratum positions used
twice), gaps (sequence numbers 1..N or stratum positions missing), final
imbalance overall and per stratum against the block bound (largest block /
2), the audit chain check, the queries of one uncontended randomization,
and, as its last line, one JSON object with the
keys throughput_per_s, p50_ms, p95_ms, p99_ms, duplicates, gaps,
final_imbalance, max_stratum_imbalance, within_block_bound, clients,
participants. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BLOCK_SIZES = [2, 4, 6]
SITES = [("C01", "Site A"), ("C02", "Site B"), ("C03", "Site C")]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="Concurrent clients.")
    parser.add_argument("--participants", type=int, default=1000, help="Participants to randomize.")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/consilium_bench",
        help="A PostgreSQL database that is dropped and created afresh.",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="Run the clients as threads of one process instead of forked processes (like web workers); "
        "Python's global interpreter lock then caps the clients' own work at one core.",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the participants' sites and indications.")
    arguments = parser.parse_args()
    if arguments.clients < 1 or arguments.participants < 1:
        parser.error("--clients and --participants must be at least 1")
    if not arguments.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    return arguments


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or name in ("postgres", "template0", "template1"):
        raise SystemExit(f"refusing to drop the database {name!r}: name a dedicated benchmark database")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # As deployed: with DEBUG on, Django would keep a log of every query.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def enroll_one(site: Any, user: Any, rng: random.Random) -> Any:
    """Screen, assess and enroll one person through the services."""
    from django.utils import timezone

    from trial import services
    from trial.actors import Actor
    from trial.models import Indication

    actor = Actor.for_user(user, label="benchmark")
    indication = rng.choice([Indication.CERVICAL, Indication.THYROID])
    entry = services.screening_create(
        actor=actor,
        site=site,
        screened_on=timezone.localdate() - dt.timedelta(days=1),
        indication=indication,
        year_of_birth=rng.randint(1961, 2000),
        sex="female" if indication == Indication.CERVICAL else rng.choice(["female", "male"]),
    )
    services.eligibility_assess(actor=actor, entry=entry, answers={"IN1": True})
    entry.refresh_from_db()
    return services.participant_enroll(
        actor=actor,
        entry=entry,
        form_version="1.0",
        consented_at=timezone.now() - dt.timedelta(minutes=5),
        taken_by=user,
    )


def add_accepted_image_rows(participants: Iterable[Any], uploaded_by: Callable[[Any], Any]) -> None:
    """One accepted image row (no pixels: lists and worklists need rows, not
    files) for each participant, uploaded by `uploaded_by(participant)`."""
    from imaging.models import Image, ImageKind, ImageStatus
    from trial.models import Indication

    Image.objects.bulk_create(
        Image(
            participant=participant,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            status=ImageStatus.ACCEPTED,
            kind=ImageKind.ULTRASOUND if participant.indication == Indication.THYROID else ImageKind.PHOTOGRAPH,
            source_sha256=f"{participant.pk:064x}",
            uploaded_by=uploaded_by(participant),
        )
        for participant in participants
    )


def build_trial(participants: int, seed: int) -> tuple[Any, dict[int, int]]:
    """A recruiting trial with an active block scheme and N enrolled
    participants, all through the services. Returns the trial and
    {participant id: coordinator user id}."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from randomization import services as randomization_services
    from trial import services
    from trial.actors import Actor
    from trial.models import Indication, Role, TrialStatus

    system = Actor.system("benchmark")
    today = timezone.localdate()
    trial = services.trial_create(
        actor=system,
        code="BENCH",
        title="Randomization benchmark",
        indications=[Indication.CERVICAL, Indication.THYROID],
        planned_sample_size=participants,
        start_date=today - dt.timedelta(days=60),
        stratification_covariates=[],
    )
    services.protocol_version_add(
        actor=system,
        trial=trial,
        version="1.0",
        effective_date=today - dt.timedelta(days=60),
        consent_form_version="1.0",
        eligibility_criteria=[{"code": "IN1", "text": "Aged 25 to 65 years", "kind": "inclusion", "indication": None}],
    )
    coordinators = []
    sites = []
    for code, name in SITES:
        site = services.site_add(actor=system, trial=trial, code=code, name=name, target_participants=participants)
        user = get_user_model().objects.create_user(username=f"bench-coordinator-{code.lower()}", password=None)
        services.membership_grant(actor=system, user=user, trial=trial, role=Role.COORDINATOR, site=site)
        sites.append(site)
        coordinators.append(user)
    randomization_services.scheme_configure(
        actor=system,
        trial=trial,
        method="permuted_blocks",
        factors=["site", "indication"],
        block_sizes=BLOCK_SIZES,
    )
    # Opening recruitment activates the scheme and commits to its seed.
    trial = services.trial_set_status(actor=system, trial=trial, status=TrialStatus.RECRUITING, reason="Benchmark")

    rng = random.Random(seed)
    owners: dict[int, int] = {}
    started = time.perf_counter()
    batch = 100
    for first in range(0, participants, batch):
        # One transaction per batch: fewer commits, the same services.
        with transaction.atomic():
            for _ in range(first, min(first + batch, participants)):
                index = rng.randrange(len(sites))
                participant = enroll_one(sites[index], coordinators[index], rng)
                owners[participant.pk] = coordinators[index].pk
        done = min(first + batch, participants)
        print(f"  enrolled {done}/{participants} ({time.perf_counter() - started:.1f} s)", flush=True)
    return trial, owners


def randomize_share(share: list[int], owners: dict[int, int]) -> tuple[list[float], list[str]]:
    """One client: randomize its participants one after another, as separate
    requests would (each reads the participant, then calls the service)."""
    from django.contrib.auth import get_user_model

    from randomization.services import participant_randomize
    from trial.actors import Actor
    from trial.models import Participant

    # The client's own user objects, as a request would load them.
    users = {user.pk: user for user in get_user_model().objects.filter(pk__in=set(owners.values()))}
    latencies: list[float] = []
    errors: list[str] = []
    for participant_id in share:
        participant = Participant.objects.select_related("trial", "site", "screening").get(pk=participant_id)
        actor = Actor(user=users[owners[participant_id]], client_ip="127.0.0.1", request_id="benchmark")
        started = time.perf_counter()
        try:
            participant_randomize(actor=actor, participant=participant)
        except Exception as error:
            errors.append(f"{participant_id}: {type(error).__name__}: {error}")
            continue
        latencies.append(time.perf_counter() - started)
    return latencies, errors


def randomize_with_threads(owners: dict[int, int], clients: int) -> tuple[float, list[float], list[str]]:
    """K threads released together; returns the wall time of the phase, each
    call's latency in seconds, and the errors."""
    from django.db import connection

    participant_ids = list(owners)
    shares = [participant_ids[index::clients] for index in range(clients)]
    ready = threading.Barrier(clients + 1)
    results: list[tuple[list[float], list[str]]] = [([], []) for _ in range(clients)]

    def client(index: int) -> None:
        try:
            ready.wait()
            results[index] = randomize_share(shares[index], owners)
        except Exception as error:
            results[index] = ([], [f"client {index}: {type(error).__name__}: {error}"])
        finally:
            connection.close()  # each thread closes its own connection

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return elapsed, [x for latencies, _ in results for x in latencies], [e for _, errors in results for e in errors]


def _process_client(share: list[int], owners: dict[int, int], ready: Any, queue: Any) -> None:
    from django.db import connection

    try:
        ready.wait()
        queue.put(randomize_share(share, owners))
    except Exception as error:
        queue.put(([], [f"client: {type(error).__name__}: {error}"]))
    finally:
        connection.close()


def randomize_with_processes(owners: dict[int, int], clients: int) -> tuple[float, list[float], list[str]]:
    """K forked processes released together (as K web workers would be)."""
    import multiprocessing

    from django.db import connections

    connections.close_all()  # a forked child must not share the parent's connection
    context = multiprocessing.get_context("fork")
    participant_ids = list(owners)
    ready = context.Barrier(clients + 1)
    queue = context.Queue()
    processes = [
        context.Process(target=_process_client, args=(participant_ids[index::clients], owners, ready, queue))
        for index in range(clients)
    ]
    for process in processes:
        process.start()
    ready.wait()
    started = time.perf_counter()
    results = [queue.get() for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    return elapsed, [x for latencies, _ in results for x in latencies], [e for _, errors in results for e in errors]


def check_allocations(trial: Any, participants: int) -> dict[str, Any]:
    from django.db.models import Count

    from randomization.models import Allocation
    from trial.audit import verify_chain

    allocations = Allocation.objects.filter(trial=trial)
    twice_allocated = allocations.values("participant_id").annotate(n=Count("id")).filter(n__gt=1).count()
    numbers_twice = allocations.values("sequence_number").annotate(n=Count("id")).filter(n__gt=1).count()
    positions_twice = (
        allocations.values("scheme_id", "stratum", "stratum_position").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    numbers = set(allocations.values_list("sequence_number", flat=True))
    missing_numbers = len(set(range(1, participants + 1)) - numbers)
    by_stratum: dict[str, list[int]] = {}
    arms: dict[str, dict[str, int]] = {}
    for stratum, position, arm in allocations.values_list("stratum", "stratum_position", "arm"):
        by_stratum.setdefault(stratum, []).append(position)
        arms.setdefault(stratum, {}).setdefault(arm, 0)
        arms[stratum][arm] += 1
    missing_positions = sum(len(set(range(1, max(p) + 1)) - set(p)) for p in by_stratum.values())
    stratum_imbalance = {
        stratum: abs(counts.get("ai_assisted", 0) - counts.get("specialist_only", 0))
        for stratum, counts in arms.items()
    }
    ai = sum(counts.get("ai_assisted", 0) for counts in arms.values())
    specialist = sum(counts.get("specialist_only", 0) for counts in arms.values())
    chain = verify_chain()
    return {
        "allocated": allocations.count(),
        "participants_twice": twice_allocated,
        "sequence_numbers_twice": numbers_twice,
        "positions_twice": positions_twice,
        "missing_sequence_numbers": missing_numbers,
        "missing_positions": missing_positions,
        "ai_assisted": ai,
        "specialist_only": specialist,
        "stratum_imbalance": stratum_imbalance,
        "chain_ok": chain.ok,
        "chain_events": chain.events_checked,
        "chain_problem": chain.problem,
    }


def queries_per_randomization(trial: Any, samples: int = 5) -> int:
    """Database round trips of one uncontended randomization (after the
    measured phase, on extra participants), BEGIN and COMMIT included."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from randomization.services import participant_randomize
    from trial.actors import Actor
    from trial.models import Membership, Participant

    membership = Membership.objects.filter(trial=trial).select_related("user", "site").first()
    assert membership is not None
    rng = random.Random(0)
    counts = []
    for _ in range(samples):
        enrolled = enroll_one(membership.site, membership.user, rng)
        participant = Participant.objects.select_related("trial", "site", "screening").get(pk=enrolled.pk)
        with CaptureQueriesContext(connection) as queries:
            participant_randomize(actor=Actor.for_user(membership.user, label="benchmark"), participant=participant)
        counts.append(len(queries.captured_queries))
    return int(statistics.median(counts))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    arguments = parse_arguments()
    print(f"Recreating {urlsplit(arguments.database_url).path.lstrip('/')} and migrating ...", flush=True)
    recreate_database(arguments.database_url)
    start_django(arguments.database_url)
    print(f"Building a recruiting trial with {arguments.participants} enrolled participants ...", flush=True)
    trial, owners = build_trial(arguments.participants, arguments.seed)

    kind = "threads" if arguments.threads else "processes"
    print(f"Randomizing with {arguments.clients} concurrent clients ({kind}) ...", flush=True)
    randomize = randomize_with_threads if arguments.threads else randomize_with_processes
    elapsed, latencies, errors = randomize(owners, arguments.clients)
    result = check_allocations(trial, arguments.participants)

    bound = max(BLOCK_SIZES) / 2
    duplicates = result["participants_twice"] + result["sequence_numbers_twice"] + result["positions_twice"]
    gaps = result["missing_sequence_numbers"] + result["missing_positions"]
    max_stratum = max(result["stratum_imbalance"].values(), default=0)
    summary = {
        "throughput_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "p95_ms": round(1000 * percentile(latencies, 0.95), 2),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
        "duplicates": duplicates,
        "gaps": gaps,
        "final_imbalance": abs(result["ai_assisted"] - result["specialist_only"]),
        "max_stratum_imbalance": max_stratum,
        "within_block_bound": max_stratum <= bound,
        "clients": arguments.clients,
        "participants": arguments.participants,
    }
    print()
    print(
        f"randomized:        {result['allocated']} of {arguments.participants} "
        f"in {elapsed:.2f} s ({len(errors)} errors)"
    )
    for error in errors[:5]:
        print(f"  error: {error}")
    print(f"throughput:        {summary['throughput_per_s']} randomizations/s")
    print(f"latency:           p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, p99 {summary['p99_ms']} ms")
    print(
        f"duplicates:        {duplicates} (participants twice {result['participants_twice']}, "
        f"sequence numbers twice {result['sequence_numbers_twice']}, stratum positions twice "
        f"{result['positions_twice']})"
    )
    print(
        f"gaps:              {gaps} (sequence numbers missing from 1..{arguments.participants}: "
        f"{result['missing_sequence_numbers']}, stratum positions missing: {result['missing_positions']})"
    )
    print(
        f"final imbalance:   overall {summary['final_imbalance']} "
        f"(AI-assisted {result['ai_assisted']}, specialist only {result['specialist_only']}); "
        f"max per stratum {max_stratum} of {len(result['stratum_imbalance'])} strata, block bound {bound:g}: "
        f"{'within' if summary['within_block_bound'] else 'EXCEEDED'}"
    )
    print(
        f"audit chain:       {'intact' if result['chain_ok'] else 'BROKEN: ' + result['chain_problem']} "
        f"({result['chain_events']} events)"
    )
    print(
        f"queries:           {queries_per_randomization(trial)} per randomization (uncontended, BEGIN/COMMIT included)"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
