#!/usr/bin/env python
"""Benchmark: the analysis data sets and the closed final report of a
simulated trial, from the live database.

    python bench/report.py [--participants 2000] [--small 200] [--panel-readers 3]
        [--database-url postgres://postgres@127.0.0.1:5432/consilium_bench_report] [--reuse]
        [--repeat 3]

Set-up (skipped with --reuse when both trials exist): the PostgreSQL
database named is dropped and created afresh, migrated, and filled by
`manage.py simulate_trial` twice: a large trial of --participants and a
small one of --small, each with --panel-readers blinded readers per case
(simulated AI outputs, `--no-ai-model`: the report needs AI results, not the
model's time). Set-up takes minutes (about 8 for 2,000 participants).

Measured, for each trial, as a DSMB member (closed report, real arms):
building the analysis data sets (analysis.datasets.build_datasets), the
CONSORT flow (analysis.endpoints.consort_flow), the error-case images and outline Dice
(ai_images_for_errors, outline_dice_by_participant), the analysis
(analysis.endpoints.analyse) and rendering the PDF
(analysis.reports.pdf.render_report, with the error cases' thumbnails as the
report builder draws them); the SQL queries of the database part
(the same count for both trial sizes is the point), and the PDF's size.
Each figure is the median of --repeat runs. The target of the issue: the
data sets plus the closed report in at most 30 s for 2,000 participants on
a 2-core machine.

The last line is one JSON object with every figure. A benchmark, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from randomization_concurrency import recreate_database, start_django  # noqa: E402

LARGE, SMALL = "BENCH-REPORT-L", "BENCH-REPORT-S"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--panel-readers", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/consilium_bench_report", help="dropped first"
    )
    parser.add_argument("--reuse", action="store_true", help="keep the database when both trials are there")
    parser.add_argument("--setup-only", action="store_true", help="simulate the trials and stop")
    return parser.parse_args()


def simulate(code: str, participants: int, panel_readers: int) -> float:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command(
        "simulate_trial",
        participants=participants,
        trial_code=code,
        panel_readers=panel_readers,
        no_ai_model=True,
        verbosity=0,
    )
    return time.perf_counter() - started


def timed(step: Callable[[], Any]) -> tuple[Any, float, int]:
    """The step's result, seconds and SQL queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - started
    return result, seconds, len(queries.captured_queries)


def measure(code: str, repeat: int) -> dict[str, Any]:
    from analysis.datasets import build_datasets
    from analysis.endpoints import ai_images_for_errors, analyse, consort_flow, outline_dice_by_participant
    from analysis.reports.builder import _thumbnails
    from analysis.reports.pdf import render_report
    from analysis.selectors import export_scope
    from trial.models import Membership, Role, Trial

    trial = Trial.objects.get(code=code)
    member = Membership.objects.filter(trial=trial, role=Role.DSMB, active=True).select_related("user").first()
    if member is None:
        raise SystemExit(f"{code} has no DSMB member to run the closed report as")
    user = member.user
    runs: dict[str, list[float]] = {
        "datasets": [],
        "consort": [],
        "images_and_outlines": [],
        "analyse": [],
        "render": [],
        "total": [],
    }
    queries: dict[str, int] = {}
    pdf_bytes = 0
    rows = 0
    errors = 0
    for _ in range(repeat):
        scope = export_scope(user, trial.pk)
        datasets, datasets_s, queries["datasets"] = timed(lambda scope=scope: build_datasets(scope))
        consort, consort_s, queries["consort"] = timed(lambda scope=scope: consort_flow(trial, scope))
        extras, extras_s, queries["images_and_outlines"] = timed(
            lambda: (ai_images_for_errors(trial), outline_dice_by_participant(trial))
        )
        analysis, analyse_s, queries["analyse"] = timed(
            lambda datasets=datasets, consort=consort, extras=extras: analyse(
                datasets, closed=True, consort=consort, images=extras[0], outline_dice=extras[1]
            )
        )
        pdf, render_s, queries["render"] = timed(
            lambda analysis=analysis: render_report(
                analysis,
                requested_by=user.get_username(),
                thumbnail=_thumbnails([case.image_id for case in analysis.errors if case.image_id is not None]),
            )
        )
        errors = len(analysis.errors)
        pdf_bytes = len(pdf)
        rows = len(datasets.participants.rows)
        for name, seconds in (
            ("datasets", datasets_s),
            ("consort", consort_s),
            ("images_and_outlines", extras_s),
            ("analyse", analyse_s),
            ("render", render_s),
            ("total", datasets_s + consort_s + extras_s + analyse_s + render_s),
        ):
            runs[name].append(seconds)
    return {
        "participants_in_data_set": rows,
        "seconds": {name: round(statistics.median(values), 3) for name, values in runs.items()},
        "queries": queries,
        "pdf_bytes": pdf_bytes,
        "ai_error_cases_with_thumbnails": errors,
    }


def main() -> None:
    arguments = parse_arguments()
    if not arguments.reuse:
        recreate_database(arguments.database_url)
    start_django(arguments.database_url)
    from trial.models import Trial

    setup: dict[str, float] = {}
    for code, size in ((SMALL, arguments.small), (LARGE, arguments.participants)):
        if not Trial.objects.filter(code=code).exists():
            print(f"Simulating {code}: {size} participants …", flush=True)
            setup[code] = round(simulate(code, size, arguments.panel_readers), 1)
    if arguments.setup_only:
        print(json.dumps({"setup_seconds": setup}))
        return
    load = os.getloadavg()
    figures = {code: measure(code, arguments.repeat) for code in (SMALL, LARGE)}
    print(
        f"\nAnalysis data sets and closed report ({os.cpu_count()} cores; load average {load[0]:.2f}; "
        f"median of {arguments.repeat})"
    )
    print(
        f"  {'trial':<16}{'rows':>6}{'data sets':>11}{'CONSORT':>9}{'analyse':>9}{'render':>9}{'total s':>9}"
        f"{'queries':>9}{'PDF kB':>8}"
    )
    for code, result in figures.items():
        seconds, queries = result["seconds"], result["queries"]
        database_queries = queries["datasets"] + queries["consort"] + queries["images_and_outlines"]
        print(
            f"  {code:<16}{result['participants_in_data_set']:>6}{seconds['datasets']:>11.2f}{seconds['consort']:>9.2f}"
            f"{seconds['analyse']:>9.2f}{seconds['render']:>9.2f}{seconds['total']:>9.2f}{database_queries:>9}"
            f"{result['pdf_bytes'] / 1024:>8.0f}"
        )
    print(json.dumps({"cores": os.cpu_count(), "load_average": load[0], "setup_seconds": setup, "trials": figures}))


if __name__ == "__main__":
    main()
