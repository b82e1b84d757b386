"""Fill the database with a simulated 17-month trial (analysis.simulation):
sites, both indications, screening, consent, randomization, images, AI
results, clinical and blinded panel reads, reference-standard results and
withdrawals, every write through the services. Refused when the trial code
already exists.

The simulated accounts' passwords are hashed with PBKDF2 at 1,000
iterations (not Django's 1,000,000) so that thousands of signatures stay
affordable: simulated accounts only, never for real use. The logins are
printed at the end on purpose.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analysis.simulation import SIMULATED_PASSWORD, SimulationConfig, SimulationError, simulate_trial


class Command(BaseCommand):
    help = "Simulate a 17-month trial through the services (demos, tests, the analysis benchmark)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--participants", type=int, required=True, help="Participants to enroll and randomize.")
        parser.add_argument("--seed", type=int, default=2026, help="Random seed (default 2026).")
        parser.add_argument(
            "--trial-code", default="CONSILIUM-SIM", help="Code of the new trial (default CONSILIUM-SIM)."
        )
        parser.add_argument("--panel-readers", type=int, default=3, help="Blinded panel readers per case (default 3).")
        parser.add_argument(
            "--no-ai-model",
            action="store_true",
            help="Do not run the shipped model: store simulated AI outputs through the result services (faster).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = SimulationConfig(
            participants=options["participants"],
            seed=options["seed"],
            trial_code=options["trial_code"],
            panel_readers=options["panel_readers"],
            ai_model=not options["no_ai_model"],
        )
        try:
            summary = simulate_trial(config, progress=self.stdout.write)
        except SimulationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(self.style.SUCCESS(f"Simulated trial {summary.trial.code} in {summary.seconds:.1f} s."))
        ai = "the shipped model, run in-process" if config.ai_model else "simulated outputs"
        self.stdout.write(f"AI results: {ai}.")
        for name, value in summary.counts.items():
            self.stdout.write(f"  {name.replace('_', ' '):<28} {value}")
        self.stdout.write(
            f"\nSimulated logins (simulated accounts only, PBKDF2 at 1,000 iterations; password {SIMULATED_PASSWORD}):"
        )
        for username, role, where in summary.logins:
            self.stdout.write(f"  {role:<34} {username:<40} ({where})")
