"""Serve the demo with its AI second opinion working: the Django development
server and one Celery worker of the inference and reports queues, as child processes of
this command. The worker also runs the outbox sweeper (`--beat`). With the
default broker (kombu's filesystem transport under var/) nothing else has to
run; with CELERY_BROKER_URL set, the worker uses that broker.

Ctrl-C or SIGTERM stops both: the web server first, then the worker with a
warm shutdown (the job in hand finishes; the worker is killed if it does not
stop in time), and the command exits 0. If either child stops on its own,
the other is stopped and the command fails, saying which one and why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.workers import BASE_DIR, start_worker, stop_worker

POLL_SECONDS = 0.5
SERVER_STOP_SECONDS = 10.0


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
            self.stdout.write(f"\nConsilium is running at {url}  (API docs: {url}api/docs/)")
            self.stdout.write(f"Worker (inference and reports queues, outbox sweeper): log in {worker_log}")
            self.stdout.write("Stop it with Ctrl-C.\n")
            while not stopping.wait(POLL_SECONDS):
                if server.poll() is not None:
                    failure = f"The web server stopped unexpectedly (exit code {server.returncode}); see above."
                elif worker.poll() is not None:
                    failure = (
                        f"The AI worker stopped unexpectedly (exit code {worker.returncode}). "
                        f"The end of its log ({worker_log}):\n{_tail(worker_log)}"
                    )
                if failure:
                    break
            if not failure:
                self.stdout.write("Stopping (the AI worker first finishes the job in hand)…")
        finally:
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
