"""Bulk import of one participant's images from files or folders (a PACS
export, a colposcope's card):

    manage.py import_images --participant C01-0042 --user jsmith [--trial CONSILIUM] PATH [PATH …]

Folders are walked recursively; all files are taken in sorted order. Each
file goes through imaging.services.image_upload as the named user (who must
be allowed to upload at the participant's site), exactly as an upload from
the web would. One JSON line per file:

    {"file": "...", "status": "accepted" | "rejected" | "duplicate", "image_id": 12, "reason": "..."}

Exit status 1 when any file was rejected, 0 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging import selectors, services
from trial.actors import Actor
from trial.errors import DomainError
from trial.models import Participant


def collect_files(paths: list[str]) -> list[Path]:
    """The files named and those under the folders named, each folder's
    files sorted; symbolic links to folders are not followed."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            below: list[Path] = []
            for folder, folders, files in os.walk(path, followlinks=False):
                folders.sort()
                below.extend(Path(folder) / name for name in files)
            found.extend(sorted(below))
        elif path.exists():
            found.append(path)
        else:
            raise CommandError(f"No such file or folder: {given}")
    return found


def _read(path: Path, limit: int) -> bytes:
    """At most one byte over the size limit: an oversized file is rejected
    for its size without being read into memory whole."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


class Command(BaseCommand):
    help = (
        "Import image files (or folders of them, walked recursively) for one participant, as a user; "
        "prints one JSON line per file and exits 1 if any file was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Files or folders.")
        parser.add_argument("--participant", required=True, metavar="STUDY_ID", help="The participant's study id.")
        parser.add_argument("--user", required=True, metavar="USERNAME", help="The user the upload is made as.")
        parser.add_argument("--trial", metavar="CODE", help="The trial's code (needed if the study id is not unique).")

    def _participant(self, study_id: str, trial_code: str | None) -> Participant:
        candidates = Participant.objects.filter(study_id=study_id).select_related("trial", "site")
        if trial_code:
            candidates = candidates.filter(trial__code=trial_code)
        found = list(candidates[:10])
        if not found:
            where = f" in trial {trial_code}" if trial_code else ""
            raise CommandError(f"No participant {study_id!r}{where}.")
        if len(found) > 1:
            codes = ", ".join(sorted(participant.trial.code for participant in found))
            raise CommandError(f"Study id {study_id!r} exists in several trials ({codes}); name one with --trial.")
        return found[0]

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None or not user.is_active:
            raise CommandError(f"No active user {options['user']!r}.")
        participant = self._participant(options["participant"], options["trial"])
        if not selectors.can_upload(user, participant):
            raise CommandError(
                f"User {user.get_username()!r} may not upload images for {participant.study_id} "
                f"at site {participant.site.code} of trial {participant.trial.code}."
            )
        files = collect_files(options["paths"])
        actor = Actor.for_user(user, label="import_images")
        limit = services.limits().max_bytes
        rejected = 0
        for path in files:
            line: dict[str, Any] = {"file": str(path)}
            try:
                data = _read(path, limit)
            except OSError as error:
                rejected += 1
                line.update(status=services.REJECTED, image_id=None, reason=f"The file cannot be read: {error}.")
                self.stdout.write(json.dumps(line))
                continue
            try:
                outcome = services.image_upload(actor=actor, participant=participant, name=path.name, data=data)
            except DomainError as error:
                # Storage failing is not the file's fault: stop, later files would fail the same way.
                raise CommandError(f"{path}: {error.message} Files after it were not imported.") from error
            line.update(
                status=outcome.status,
                image_id=outcome.image.pk if outcome.image else None,
                reason=outcome.reason,
            )
            if outcome.warnings:
                line["warnings"] = outcome.warnings
            self.stdout.write(json.dumps(line))
            rejected += outcome.status == services.REJECTED
        if rejected:
            self.stderr.write(f"{rejected} of {len(files)} file(s) rejected.")
            sys.exit(1)
