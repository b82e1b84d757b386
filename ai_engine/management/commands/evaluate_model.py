"""Evaluate a checkpoint on a labelled data set at native resolution:

    manage.py evaluate_model --data DIR --checkpoint FILE --json OUT [--device cpu|cuda] [--small-lesion-px 10]

Writes Dice, IoU, HD95 (pixels), lesion-wise sensitivity (overall, small,
large) and per-image figures as JSON (conventions in ai_engine.evaluation),
and prints a summary. The checkpoint's sha256 is verified against its side
file first. Needs no database.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ai_engine.checkpoint import CheckpointError
from ai_engine.data import DataError
from ai_engine.device import DEVICE_CHOICES, DeviceError
from ai_engine.evaluation import JSON_KEYS, EvaluationError, evaluate


class Command(BaseCommand):
    help = "Evaluate a segmentation checkpoint on images and masks; writes the figures as JSON."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", required=True, metavar="DIR", help="images/ + masks/ (2D) or nnU-Net/MSD (3D).")
        parser.add_argument("--checkpoint", required=True, metavar="FILE")
        parser.add_argument("--json", required=True, metavar="OUT", help="File the results are written to.")
        parser.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="Default: the GPU if there is one.")
        parser.add_argument(
            "--small-lesion-px",
            type=float,
            default=10.0,
            metavar="PX",
            help="Lesions whose bounding box's longest side is under this many pixels count as small.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out = Path(options["json"])
        if out.is_dir():
            raise CommandError(f"--json {out} is a folder; give the result file's name.")
        try:
            result = evaluate(
                data_dir=options["data"],
                checkpoint=options["checkpoint"],
                device=options["device"],
                small_lesion_px=options["small_lesion_px"],
            )
        except (DataError, CheckpointError, EvaluationError, DeviceError) as error:
            raise CommandError(str(error)) from error
        _write_json(out, {key: result[key] for key in JSON_KEYS})
        self.stdout.write(
            f"{result['architecture']} on {result['n_images']} images: Dice {result['dice']:.4f}  "
            f"IoU {result['iou']:.4f}  HD95 {result['hd95']:.2f} px  "
            f"lesion sensitivity {_proportion(result['lesion_sensitivity'])} "
            f"(small {_proportion(result['lesion_sensitivity_small'])}, "
            f"large {_proportion(result['lesion_sensitivity_large'])})"
        )
        self.stdout.write(f"checkpoint sha256 {result['checkpoint_sha256']}")
        self.stdout.write(f"written to {out}")


def _proportion(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_json(path: Path, result: dict[str, Any]) -> None:
    """Atomically, and refusing NaN: the file is read by other programs that
    would choke on it."""
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
