"""Real faults for tests/test_faults.py: a PostgreSQL cluster of the test's
own, to restart at will (never the machine's shared one), and the app served
by gunicorn against it, as in production.

Run as a module (`python -m tests.faults seed|census`) with DATABASE_URL
pointing at such a cluster, it sets up a recruiting trial there, or counts
what the clients' writes left behind, through the ORM, and prints one JSON
object.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
POSTGRES_BIN = Path(os.environ.get("CONSILIUM_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
HOST = "127.0.0.1"
SERVICE_USER = "postgres"  # initdb refuses to run as root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _as_service_user(command: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", SERVICE_USER, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class PostgresCluster:
    """A throw-away cluster in a temporary folder on a free port. fsync is
    off (only a crash of the machine loses data then); synchronous_commit
    stays on: with it off an immediate shutdown loses commits already
    answered, which is not a fault the app can be asked to survive."""

    def __init__(self) -> None:
        if not (POSTGRES_BIN / "initdb").exists():
            raise AssertionError(f"PostgreSQL server binaries are not in {POSTGRES_BIN} (postgresql-15)")
        self.port = free_port()
        # Not under pytest's tmp_path: the service user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="consilium-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, user=SERVICE_USER, group=SERVICE_USER)
        self._check(
            _as_service_user(
                [
                    str(POSTGRES_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            "initdb",
        )
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "60",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{HOST}:{self.port}/{database}"

    def _check(self, completed: subprocess.CompletedProcess[str], what: str) -> None:
        if completed.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(
                f"{what} failed ({completed.returncode}): {completed.stderr}{completed.stdout}\n{server_log}"
            )

    def _pg_ctl(self, *arguments: str) -> None:
        command = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60"]
        self._check(_as_service_user([*command, *arguments], timeout=90), f"pg_ctl {' '.join(arguments)}")

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self, mode: str) -> None:
        """pg_ctl restart -m fast (sessions are ended, transactions rolled
        back) or -m immediate (the server is killed and recovers from WAL)."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "immediate")

    def create_database(self, name: str) -> None:
        self._check(
            _as_service_user(
                [str(POSTGRES_BIN / "createdb"), "-h", HOST, "-p", str(self.port), "-U", "postgres", name]
            ),
            "createdb",
        )

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_service_user([str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-w", "stop", "-m", "immediate"])
        shutil.rmtree(self.root, ignore_errors=True)


def app_environment(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "CONSILIUM_VAR_DIR": str(var_dir),
        "MEDIA_ROOT": str(var_dir / "media"),
        "LOG_LEVEL": "WARNING",
        "DEBUG": "1",
    }
    environment.pop("SQLITE_PATH", None)
    environment.update(extra)
    return environment


def run_module(command: str, environment: dict[str, str], timeout: float = 180.0) -> dict[str, Any]:
    """`python -m tests.faults <command>` against the given database; its JSON answer."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.faults", command],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"tests.faults {command} failed:\n{completed.stderr[-4000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


class AppServer:
    """The app under gunicorn (config/gunicorn.py when there is one), as a
    deployment runs it: several worker processes, threads, persistent
    database connections checked before reuse (CONN_HEALTH_CHECKS)."""

    def __init__(self, environment: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "gunicorn", "config.wsgi:application"]
        if (BASE_DIR / "config" / "gunicorn.py").exists():
            command += ["--config", "python:config.gunicorn"]
        # The command line overrides the file: our port, a size for this test.
        # Workers are never recycled here, and their start is logged: the test
        # counts the starts to prove no worker had to be replaced.
        command += ["--bind", f"{HOST}:{self.port}", "--workers", "2", "--threads", "4", "--timeout", "60"]
        command += ["--max-requests", "0", "--log-level", "info"]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=BASE_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited ({self.process.returncode}):\n{self.log()[-4000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn never listened on {self.port}:\n{self.log()[-4000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # gunicorn's quick shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


# --- Run as a module, inside Django, against DATABASE_URL ------------------------------------


def seed() -> dict[str, Any]:
    """Migrate, then a recruiting trial with one site, a coordinator with an
    API token and an active permuted-block scheme."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from randomization import services as randomization_services
    from tests.conftest import PASSWORD, SYSTEM, make_trial
    from trial import services
    from trial.models import Role, TrialStatus

    call_command("migrate", verbosity=0, interactive=False)
    trial = make_trial(code="FAULTS", title="Fault scenario")
    site = services.site_add(actor=SYSTEM, trial=trial, code="F01", name="Fault site", target_participants=400)
    services.trial_set_status(actor=SYSTEM, trial=trial, status=TrialStatus.RECRUITING, reason="Ethics approval")
    user = get_user_model().objects.create_user(username="fault-coordinator", password=PASSWORD)
    services.membership_grant(actor=SYSTEM, user=user, trial=trial, role=Role.COORDINATOR, site=site)
    randomization_services.scheme_configure(
        actor=SYSTEM, trial=trial, method="permuted_blocks", factors=["site", "indication"], block_sizes=[2, 4, 6]
    )
    randomization_services.scheme_activate(actor=SYSTEM, trial=trial)
    token = Token.objects.create(user=user)
    return {"site": site.pk, "user": user.pk, "username": user.username, "token": token.key}


def census() -> dict[str, Any]:
    """What the database holds: rows, whether each participant has its
    consent and audit events, each allocation its participant and event, the
    request ids that wrote audit events, and what `manage.py verify_audit`
    says of the chain."""
    from django.core.management import call_command

    from randomization.models import Allocation
    from trial.models import AuditEvent, Participant, ScreeningEntry

    participants = list(Participant.objects.all())
    allocations = list(Allocation.objects.all())
    participant_events = set(AuditEvent.objects.filter(action="participant.enroll").values_list("object_id", flat=True))
    allocation_events = set(
        AuditEvent.objects.filter(action="randomization.allocate").values_list("object_id", flat=True)
    )
    verify = io.StringIO()
    try:
        call_command("verify_audit", "--json", stdout=verify, stderr=verify)  # exits 1 when broken
        verify_exit = 0
    except SystemExit as exit_:
        verify_exit = int(exit_.code or 0)
    return {
        "verify_audit": {"exit": verify_exit, "output": verify.getvalue().strip()},
        "screening_entries": ScreeningEntry.objects.count(),
        "screening_ids": sorted(ScreeningEntry.objects.values_list("pk", flat=True)),
        "participant_ids": sorted(participant.pk for participant in participants),
        "participants_without_consent": [p.pk for p in participants if not p.consents.exists()],
        "participants_without_enroll_event": [p.pk for p in participants if str(p.pk) not in participant_events],
        "allocated_participant_ids": sorted(allocation.participant_id for allocation in allocations),
        "allocations_without_event": [
            a.pk
            for a in allocations
            if str(a.pk) not in allocation_events and str(a.participant_id) not in allocation_events
        ],
        "audit_request_ids": sorted(
            set(AuditEvent.objects.exclude(request_id="").values_list("request_id", flat=True))
        ),
        "audit_events": AuditEvent.objects.count(),
    }


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    commands = {"seed": seed, "census": census}
    print(json.dumps(commands[sys.argv[1]]()))


if __name__ == "__main__":
    main()
