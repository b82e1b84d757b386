"""manage.py export_analysis_data --trial CODE --user USERNAME --out DIR

Writes participants.csv, reads.csv, data_dictionary.csv and manifest.json
(the data hash, each file's SHA-256, who made it and the audit event) into
an empty or new folder. The user's role decides what of the arm is shown;
the export is recorded in the audit trail like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import Http404

from analysis.services import analysis_export_create
from trial.actors import Actor
from trial.errors import DomainError
from trial.models import Trial


class Command(BaseCommand):
    help = "Export the trial's analysis data sets (CSV), their data dictionary and a manifest with the data hash."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trial", required=True, help="Trial code")
        parser.add_argument("--user", required=True, help="Username of the person exporting (their role applies)")
        parser.add_argument("--out", required=True, help="Folder to write into (new or empty)")

    def handle(self, *args: Any, **options: Any) -> None:
        trial = Trial.objects.filter(code=options["trial"]).first()
        if trial is None:
            raise CommandError(f"No trial with code {options['trial']!r}.")
        user = get_user_model().objects.filter(username=options["user"], is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {options['user']!r}.")
        out = Path(options["out"])
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise CommandError(f"{out} is not empty (or not a folder); choose a new or empty folder.")
        try:
            export = analysis_export_create(actor=Actor.for_user(user, label="export_analysis_data"), trial=trial)
        except DomainError as error:
            raise CommandError(error.message) from error
        except (PermissionDenied, Http404) as error:
            raise CommandError(str(error)) from error
        out.mkdir(parents=True, exist_ok=True)
        for name, data in export.bundle().items():
            (out / name).write_bytes(data)
        self.stdout.write(f"{out}: data sha256 {export.data_sha256} (audit event {export.event.sequence})")
