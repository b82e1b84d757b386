"""Serve the demo with its AI second opinion working: the Django development
server and one Celery worker of the inference and reports queues, as child processes of
this command. The worker also runs the outbox sweeper (`--beat`). With the
default broker (kombu's filesystem transport under var/) nothing else has to
run; with CELERY_BROKER_URL set, the worker uses that broker.

When the demo trial is loaded (`seed_demo`), the command first finishes it:
it waits until the worker has judged the seeded images, then runs the
second phase (`seed_demo --readings`: the reads, which follow the AI second
opinion, the reference results and two interim reports queued for the
worker), waits until the worker has built the reports, and only then prints
the URL, one login per role and where the reports are. Each step is
idempotent: a second start finds the work done.

Ctrl-C or SIGTERM stops everything: the second phase if it is running (its
work commits participant by participant), the web server, then the worker
with a warm shutdown (the job in hand finishes; the worker is killed if it
does not stop in time), and the command exits 0. If a child stops on its
own (or the second phase fails), the others are stopped and the command
fails, saying which one and why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ai_engine.models import AiResult
from analysis.models import Report, ReportStatus
from config.workers import BASE_DIR, start_worker, stop_worker
from trial.management.commands.seed_demo import AI_PENDING, DEMO_USERS, TRIAL_CODE
from trial.models import Role, Trial

POLL_SECONDS = 0.5
SERVER_STOP_SECONDS = 10.0
PROGRESS_SECONDS = 10.0  # at most this often, the progress of the AI results


class _Finisher:
    """The steps that finish a seeded demo trial, advanced a little on
    each poll of the command's loop: wait for the AI results, run the
    second phase, wait for the reports. `failure` says why it cannot go on."""

    def __init__(self, command: BaseCommand, trial: Trial | None) -> None:
        self.command = command
        self.trial = trial
        self.step = "ai" if trial is not None else "ready"
        self.readings: subprocess.Popen[bytes] | None = None
        self.failure = ""
        self.started = time.monotonic()
        self.last_progress = (-1, 0.0)
        self.report_warnings: list[str] = []

    @property
    def ready(self) -> bool:
        return self.step == "ready"

    def advance(self) -> None:
        if self.trial is None or self.ready:
            return
        if self.step == "ai":
            results = AiResult.objects.filter(image__trial=self.trial)
            total, pending = results.count(), results.filter(status__in=AI_PENDING).count()
            finished = total - pending
            shown, shown_at = self.last_progress
            if finished != shown and (pending == 0 or time.monotonic() - shown_at >= PROGRESS_SECONDS):
                self.command.stdout.write(f"AI results of the demo images: {finished} of {total} finished.")
                self.last_progress = (finished, time.monotonic())
            if pending == 0:
                self.command.stdout.write("Signing the demo reads and reference results (seed_demo --readings)…")
                # Its own session: Ctrl-C reaches this command, which stops it first.
                self.readings = subprocess.Popen(
                    [sys.executable, "manage.py", "seed_demo", "--readings"], cwd=BASE_DIR, start_new_session=True
                )
                self.step = "readings"
        elif self.step == "readings":
            assert self.readings is not None
            code = self.readings.poll()
            if code is None:
                return
            self.readings = None
            if code != 0:
                self.failure = (
                    f"The second phase of the demo (seed_demo --readings) failed (exit code {code}); see above."
                )
                return
            self.command.stdout.write("Waiting for the worker to build the interim reports…")
            self.step = "reports"
        elif self.step == "reports":
            reports = list(Report.objects.filter(trial=self.trial))
            if any(report.status in (ReportStatus.QUEUED, ReportStatus.RUNNING) for report in reports):
                return
            self.report_warnings = [
                f"The {report.get_kind_display()} report failed: {report.error}"
                for report in reports
                if report.status == ReportStatus.FAILED
            ]
            self.command.stdout.write(f"The demo trial is complete ({time.monotonic() - self.started:.0f} s).")
            self.step = "ready"

    def stop(self) -> None:
        if self.readings is not None:
            _stop_server(self.readings)


class Command(BaseCommand):
    help = "Serve the demo: the web server and one AI worker (with the outbox sweeper); Ctrl-C stops both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address the web server listens on")
        parser.add_argument("--port", type=int, default=8000, help="port the web server listens on")
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=30.0,
            help="seconds the worker may take to finish its job when stopping before it is killed",
        )

    def handle(self, *args: Any, host: str, port: int, stop_timeout: float, **options: Any) -> None:
        _check_port_free(host, port)
        stopping = threading.Event()

        def request_stop(number: int, frame: Any) -> None:
            stopping.set()

        # Handlers first, so that a Ctrl-C while the children start still stops them.
        previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
        worker_log = Path(settings.VAR_DIR) / "demo-worker.log"
        worker: subprocess.Popen[bytes] | None = None
        server: subprocess.Popen[bytes] | None = None
        finisher: _Finisher | None = None
        failure = ""
        try:
            worker = start_worker(
                env={"AI_TORCH_THREADS": os.environ.get("AI_TORCH_THREADS", "1")},
                log_path=worker_log,
                pool="solo",
                concurrency=1,
                hostname="demo@%h",
                beat=True,
            )
            # Its own session: the terminal's Ctrl-C reaches this command only,
            # which then stops the children in order.
            server = subprocess.Popen(  # noqa: S603 — our own interpreter and fixed arguments
                [sys.executable, "manage.py", "runserver", "--noreload", _address(host, port)],
                cwd=BASE_DIR,
                start_new_session=True,
            )
            url = f"http://{_address(host, port)}/"
            finisher = _Finisher(self, Trial.objects.filter(code=TRIAL_CODE).first())
            if not finisher.ready:
                self.stdout.write(
                    f"\nThe web server ({url}) and the AI worker (log in {worker_log}) are starting; finishing the "
                    "demo trial first: its AI results, reads and interim reports. Ctrl-C stops it all."
                )
            announced = False
            while not stopping.wait(POLL_SECONDS):
                if server.poll() is not None:
                    failure = f"The web server stopped unexpectedly (exit code {server.returncode}); see above."
                elif worker.poll() is not None:
                    failure = (
                        f"The AI worker stopped unexpectedly (exit code {worker.returncode}). "
                        f"The end of its log ({worker_log}):\n{_tail(worker_log)}"
                    )
                else:
                    finisher.advance()
                    failure = finisher.failure
                if failure:
                    break
                if finisher.ready and not announced:
                    self._announce(url, worker_log, finisher)
                    announced = True
            if not failure:
                self.stdout.write("Stopping (the AI worker first finishes the job in hand)…")
        finally:
            if finisher is not None:
                finisher.stop()
            if server is not None:
                _stop_server(server)
            if worker is not None:
                running = worker.poll() is None
                if stop_worker(worker, timeout=stop_timeout) == -signal.SIGKILL and running:
                    self.stderr.write(f"The AI worker did not stop within {stop_timeout:g} s and was killed.")
            for number, handler in previous.items():
                signal.signal(number, handler)
        if failure:
            raise CommandError(f"{failure}\nThe demo has stopped.")
        self.stdout.write("Consilium has stopped (web server and AI worker).")

    def _announce(self, url: str, worker_log: Path, finisher: _Finisher) -> None:
        self.stdout.write(f"\nConsilium is running at {url}  (API docs: {url}api/docs/)")
        self.stdout.write(f"Worker (inference and reports queues, outbox sweeper): log in {worker_log}")
        if finisher.trial is not None:
            self.stdout.write("\nOne login per role (demo only; seed_demo printed every login):")
            seen: set[str] = set()
            for username, role, site, password in DEMO_USERS:
                if role in seen:
                    continue
                seen.add(role)
                where = f"site {site}" if site else "all sites"
                self.stdout.write(f"  {Role(role).label:<34} {username:<24} {password:<30} ({where})")
            if finisher.report_warnings:
                for warning in finisher.report_warnings:
                    self.stderr.write(warning)
            else:
                self.stdout.write(
                    f"\nThe interim reports are ready to download at {url}analysis/reports/ "
                    "(open report: statistician; closed report: dsmb)."
                )
        self.stdout.write("Stop it with Ctrl-C.\n")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """Fail before starting anything when the port is taken (the web server
    binds the same way, reusing a port left in TIME_WAIT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise CommandError(
                f"Cannot listen on {_address(host, port)}: {error.strerror}. "
                "Choose another port (--port, or PORT=… with make demo)."
            ) from error


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    for number in (signal.SIGTERM, signal.SIGKILL):
        if server.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, number)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=SERVER_STOP_SECONDS)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"
