"""Register a segmentation checkpoint in the model registry:

    manage.py register_model FILE --name N --version V --indication thyroid|cervical
        [--intended-use TEXT] [--card FILE] [--activate-for TRIAL_CODE --reason TEXT]

The checkpoint is verified against its `.sha256` side file, copied to
MEDIA_ROOT/models/<sha256>.pt and recorded as a draft version; its model
card is --card, else the card beside the file (FILE.md without the .pt, or MODEL_CARD.md). With --activate-for
it is also deployed for that trial (a reason is needed once the trial
recruits). Acts as the system; every write is in the audit trail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from ai_engine import services
from ai_engine.models import ModelVersion
from trial.actors import Actor
from trial.errors import DomainError
from trial.models import Indication, Trial


class Command(BaseCommand):
    help = "Register a checkpoint (verified by its sha256) in the model registry; optionally deploy it for a trial."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model's version here, replacing Django's own
        # --version (which would print Django's version number).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="The checkpoint (.pt) with its .sha256 side file beside it.")
        parser.add_argument("--name", required=True, help="The model's name, e.g. combined-thyroid.")
        parser.add_argument("--version", required=True, metavar="V", help="e.g. 1.0")
        parser.add_argument("--indication", required=True, choices=Indication.values)
        parser.add_argument("--intended-use", default="", metavar="TEXT", help="Modality, indication, setting.")
        parser.add_argument(
            "--card",
            metavar="FILE",
            help="Model card (Markdown). Default: the .md of the same name beside FILE, else MODEL_CARD.md there.",
        )
        parser.add_argument("--activate-for", metavar="TRIAL_CODE", help="Deploy the model for this trial.")
        parser.add_argument("--reason", default="", help="Why: needed with --activate-for once the trial recruits.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No checkpoint file at {path}.")
        card_text = _read_card(options["card"])
        trial = None
        if options["activate_for"]:
            trial = Trial.objects.filter(code=options["activate_for"]).first()
            if trial is None:
                raise CommandError(f"No trial with code {options['activate_for']!r}.")
        actor = Actor.system("register_model")
        sha256 = ""
        try:
            with transaction.atomic():
                model_version = services.model_register(
                    actor=actor,
                    path=path,
                    name=options["name"],
                    version=options["version"],
                    indication=options["indication"],
                    intended_use=options["intended_use"],
                    card_text=card_text,
                )
                sha256 = model_version.sha256
                deployment = (
                    services.model_activate(
                        actor=actor, trial=trial, model_version=model_version, reason=options["reason"]
                    )
                    if trial is not None
                    else None
                )
        except DomainError as error:
            if sha256:
                # The registration was rolled back with the failed deployment.
                services.discard_unregistered_checkpoint(sha256)
            raise CommandError(error.message) from error
        self._report(model_version, deployed_for=trial.code if deployment is not None and trial else None)

    def _report(self, model_version: ModelVersion, *, deployed_for: str | None) -> None:
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered {model_version.name} {model_version.version} "
                f"({model_version.arch}, {model_version.get_indication_display()})."
            )
        )
        self.stdout.write(f"sha256 {model_version.sha256}")
        self.stdout.write(f"stored as {services.stored_path(model_version)}")
        if deployed_for is not None:
            self.stdout.write(f"Deployed as the active {model_version.indication} model of trial {deployed_for}.")


def _read_card(card: str | None) -> str | None:
    if card is None:
        return None
    try:
        return Path(card).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"The model card {card} cannot be read ({error.__class__.__name__}: {error}).") from error
