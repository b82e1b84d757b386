"""Train a segmentation network and keep the best epoch as a checkpoint:

    manage.py train_model --data DIR --arch combined --epochs 40 --image-size 128 --out model.pt
        [--seed 0] [--device cpu|cuda] [--batch-size 8] [--lr 0.001] [--validation-fraction 0.2]
        [--max-steps-per-epoch M] [--no-progress] [--option KEY=VALUE …]

The data folder is checked first; bad input stops the command with a message
naming the file before any training starts. Prints one line per epoch (loss,
validation Dice), then the checkpoint's path and sha256 (also written to
FILE.sha256). Needs no database.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ai_engine.architectures import ARCHITECTURES, ArchitectureError
from ai_engine.checkpoint import CheckpointError
from ai_engine.data import DataError
from ai_engine.device import DEVICE_CHOICES, DeviceError
from ai_engine.training import TrainingError, train


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs with JSON values; a bare word is taken as a string."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise CommandError(f"--option {pair!r} must look like KEY=VALUE, e.g. unet_widths=[8,16,32].")
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


class Command(BaseCommand):
    help = "Train a segmentation network on images and masks; keeps the epoch with the best validation Dice."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", required=True, metavar="DIR", help="images/ + masks/ (2D) or nnU-Net/MSD (3D).")
        parser.add_argument("--arch", required=True, choices=ARCHITECTURES, help="The network to train.")
        parser.add_argument("--epochs", required=True, type=int, metavar="N")
        parser.add_argument("--image-size", required=True, type=int, metavar="S", help="2D input size; 3D patch edge.")
        parser.add_argument("--out", required=True, metavar="FILE", help="Checkpoint file to write.")
        parser.add_argument("--seed", type=int, default=0, metavar="K")
        parser.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="Default: the GPU if there is one.")
        parser.add_argument("--batch-size", type=int, default=8, metavar="B")
        parser.add_argument("--lr", type=float, default=1e-3, metavar="X", help="Learning rate (AdamW).")
        parser.add_argument("--validation-fraction", type=float, default=0.2, metavar="F")
        parser.add_argument("--max-steps-per-epoch", type=int, default=None, metavar="M")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Architecture setting, VALUE in JSON (e.g. unet_widths=[8,16,32]); may be repeated.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        architecture_options = parse_options(options["option"])
        try:
            result = train(
                data_dir=options["data"],
                arch=options["arch"],
                epochs=options["epochs"],
                image_size=options["image_size"],
                out=options["out"],
                seed=options["seed"],
                device=options["device"],
                batch_size=options["batch_size"],
                learning_rate=options["lr"],
                validation_fraction=options["validation_fraction"],
                max_steps_per_epoch=options["max_steps_per_epoch"],
                options=architecture_options,
                progress=not options["no_progress"],
                log=self.stdout.write,
            )
        except (DataError, ArchitectureError, TrainingError, DeviceError, CheckpointError) as error:
            raise CommandError(str(error)) from error
        # train() has already logged the kept checkpoint's path and sha256.
        self.stdout.write(
            f"Best of {options['epochs']} epochs: {result.best_epoch}; sha256 also in {result.checkpoint}.sha256"
        )
