"""Walk the hash-chained audit trail and say whether it is intact.

Exit status 0 when every event links to the one before it and its content is
unchanged; 1, naming the first bad event, when one was edited, removed or
reordered (21 CFR 11.10(e): a monitor or inspector must be able to check that
the trail was not altered).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from trial.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; exit 1 and name the first bad event if it is broken."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a sentence.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_chain()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": report.ok,
                        "events_checked": report.events_checked,
                        "first_bad_sequence": report.first_bad_sequence,
                        "problem": report.problem,
                    }
                )
            )
        elif report.ok:
            self.stdout.write(f"audit trail intact: {report.events_checked} events")
        else:
            self.stderr.write(f"audit trail BROKEN at event #{report.first_bad_sequence}: {report.problem}")
        if not report.ok:
            # Not CommandError: its "CommandError: " prefix would garble the
            # one line a monitoring job parses, and --json must stay clean JSON.
            sys.exit(1)
