"""Writes a SYNTHETIC training set (computer-generated, no patient data, not
for clinical use) in a layout scan_dataset reads:

    manage.py make_synthetic_data --kind thyroid|colposcopy|phantom3d --count N
        [--size S] [--seed K] --out DIR [--force]

Refuses a folder that is not empty unless --force is given; with --force the
files of an earlier synthetic run there (names starting "synthetic_") are
replaced and nothing else is deleted. Needs no database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ai_engine.data import scan_dataset
from ai_engine.synthetic import write_colposcopy_2d, write_phantom_3d, write_thyroid_ultrasound_2d

Writer = Callable[..., Path]
KINDS: dict[str, tuple[Writer, int]] = {
    "thyroid": (write_thyroid_ultrasound_2d, 128),
    "colposcopy": (write_colposcopy_2d, 128),
    "phantom3d": (write_phantom_3d, 32),
}


class Command(BaseCommand):
    help = (
        "Write a SYNTHETIC data set (computer-generated images with no patient data, not for clinical use) "
        "for training and testing the AI engine."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, choices=sorted(KINDS), help="What to imitate.")
        parser.add_argument("--count", required=True, type=int, help="Number of images (volumes for phantom3d).")
        parser.add_argument("--size", type=int, help="Image side in pixels (default 128; phantom3d 32).")
        parser.add_argument("--seed", type=int, default=0, help="Random seed; the same seed gives the same files.")
        parser.add_argument("--out", required=True, metavar="DIR", help="Folder to write (created if missing).")
        parser.add_argument("--force", action="store_true", help="Write into a folder that is not empty.")

    def handle(self, *args: object, **options: object) -> None:
        kind, out = str(options["kind"]), Path(str(options["out"]))
        count, seed = int(str(options["count"])), int(str(options["seed"]))
        writer, default_size = KINDS[kind]
        size = int(str(options["size"])) if options["size"] is not None else default_size
        if out.exists() and not out.is_dir():
            raise CommandError(f"{out} is a file, not a folder.")
        if out.is_dir() and any(out.iterdir()) and not options["force"]:
            raise CommandError(
                f"{out} is not empty; choose a new or empty folder, or pass --force to write into it "
                "(earlier synthetic_ files there are replaced, nothing else is deleted)."
            )
        try:
            root = writer(out, count=count, size=size, seed=seed)
            info = scan_dataset(root)  # what was written must be a set training accepts
        except ValueError as error:  # DataError is a ValueError too
            raise CommandError(str(error)) from error
        summary = info.describe()
        by_category = Counter(
            info.categories[sample.category] for sample in info.samples if sample.category is not None
        )
        self.stdout.write(
            f"Wrote {summary['n_images']} SYNTHETIC {kind} {'volumes' if info.layout == '3d' else 'images'} "
            f"({size} px, seed {seed}) to {root}."
        )
        self.stdout.write(
            "They are computer-generated, contain no patient data and are not for clinical use "
            "(see README.txt and dataset.json there)."
        )
        if by_category:
            self.stdout.write("Categories: " + ", ".join(f"{name} {by_category[name]}" for name in info.categories))
        self.stdout.write(f"Data fingerprint (sha256): {summary['sha256']}")
