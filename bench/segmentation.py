#!/usr/bin/env python
"""Benchmark: every segmentation architecture trained with the same budget on
the same SYNTHETIC 2D data, then compared side by side.

    python bench/segmentation.py [--train-count 240] [--test-count 80] [--size 128]
        [--epochs 8] [--steps-per-epoch 25] [--batch-size 8] [--seed 0]
        [--architectures combined,unet,...] [--no-trade-off] [--markdown FILE] [--work-dir DIR]

The training and test sets are generated (ai_engine.synthetic, thyroid
ultrasound-like frames, different seeds) unless --train-data/--test-data name
folders in the images/ + masks/ layout. Each architecture is trained by
ai_engine.training.train with the same data, steps, batch size, learning rate
and seed, and evaluated on the test set by ai_engine.evaluation.evaluate. Rows
"combined [kite …]" are the trade-off of the combined model's Kite branch
(depth and widths) against accuracy and speed.

Columns: parameters; MACs of one 256×256 image (torch's FLOP counter, MACs =
FLOPs / 2); CPU inference images/s at batch 8 and 256×256 (all cores, no
gradient, after warm-up); peak memory of that inference (how far the peak
resident memory rises above the resident memory before the call, in a fresh
process per model, after one warm-up call; Linux); test
Dice and HD95 (pixels); lesion sensitivity for small lesions (< 10 px across)
and large ones. The last line is one JSON object with every row. A
benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINES = ["combined", "unet", "attention_unet", "basic_unet", "kiunet"]
# The combined model's Kite branch: depth (number of levels) and widths.
TRADE_OFF = {
    "combined [no kite]": {"kite_widths": []},
    "combined [kite 8,16]": {"kite_widths": [8, 16]},
    "combined [kite 16,32]": {"kite_widths": [16, 32]},
}
SPEED_SIZE = 256
SPEED_BATCH = 8


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-data", type=Path, help="Training folder (default: generated synthetic set).")
    parser.add_argument("--test-data", type=Path, help="Test folder (default: generated synthetic set).")
    parser.add_argument("--train-count", type=int, default=240)
    parser.add_argument("--test-count", type=int, default=80)
    parser.add_argument("--size", type=int, default=128, help="Image size of the data and of training.")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architectures", default=",".join(BASELINES), help="Comma-separated list.")
    parser.add_argument("--no-trade-off", action="store_true", help="Skip the Kite depth/width variants.")
    parser.add_argument("--speed-iterations", type=int, default=5)
    parser.add_argument("--markdown", type=Path, help="Also write the table to this Markdown file.")
    parser.add_argument("--work-dir", type=Path, help="Keep data and checkpoints here (default: a temporary folder).")
    arguments = parser.parse_args()
    unknown = set(arguments.architectures.split(",")) - set(BASELINES)
    if unknown:
        parser.error(f"unknown architecture(s) {sorted(unknown)}; choose from {BASELINES}")
    return arguments


def _model(arch: str, options: dict[str, Any], in_channels: int, out_channels: int) -> Any:
    from ai_engine.architectures import architecture_config, build_model

    config = architecture_config(arch, spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **options)
    return build_model(config)


def macs_at(model: Any, in_channels: int, size: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, in_channels, size, size))
    return int(counter.get_total_flops() // 2)


def images_per_second(model: Any, in_channels: int, iterations: int) -> float:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model.eval()
    batch = torch.rand(SPEED_BATCH, in_channels, SPEED_SIZE, SPEED_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(batch)  # warm-up: first-call allocations and kernel choices
        started = time.perf_counter()
        for _ in range(iterations):
            model(batch)
        elapsed = time.perf_counter() - started
    return SPEED_BATCH * iterations / elapsed


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_memory_child(arch: str, options: dict[str, Any], in_channels: int, out_channels: int, queue: Any) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model = _model(arch, options, in_channels, out_channels).eval()
    batch = torch.rand(SPEED_BATCH, in_channels, SPEED_SIZE, SPEED_SIZE)
    with torch.no_grad():
        model(batch)  # first-call allocations are not the model's working memory
        # Linux: writing 5 to clear_refs resets the peak resident size (VmHWM).
        Path("/proc/self/clear_refs").write_text("5")
        before = _resident_kib("VmRSS")
        model(batch)
    queue.put((_resident_kib("VmHWM") - before) / 1024)


def peak_inference_memory_mib(arch: str, options: dict[str, Any], in_channels: int, out_channels: int) -> float:
    """In a fresh process, so that one model's peak does not hide the next's."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_memory_child, args=(arch, options, in_channels, out_channels, queue))
    process.start()
    value = float(queue.get(timeout=600))
    process.join()
    return value


def prepare_data(arguments: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    from ai_engine.synthetic import write_thyroid_ultrasound_2d

    train_dir = arguments.train_data
    test_dir = arguments.test_data
    if train_dir is None:
        train_dir = work / "synthetic-train"
        if not train_dir.exists():
            write_thyroid_ultrasound_2d(
                train_dir, count=arguments.train_count, size=arguments.size, seed=arguments.seed
            )
    if test_dir is None:
        test_dir = work / "synthetic-test"
        if not test_dir.exists():
            seed = arguments.seed + 1000  # another seed: images the models never saw
            write_thyroid_ultrasound_2d(test_dir, count=arguments.test_count, size=arguments.size, seed=seed)
    return train_dir, test_dir


def run_one(
    name: str, arch: str, options: dict[str, Any], arguments: argparse.Namespace, train_dir: Path, test_dir: Path
) -> dict[str, Any]:
    from ai_engine.architectures import count_parameters
    from ai_engine.data import scan_dataset
    from ai_engine.evaluation import evaluate
    from ai_engine.training import train

    info = scan_dataset(train_dir)
    checkpoint = arguments.work_dir / f"{name.replace(' ', '_').replace('[', '').replace(']', '')}.pt"
    started = time.perf_counter()
    result = train(
        data_dir=train_dir,
        arch=arch,
        epochs=arguments.epochs,
        image_size=arguments.size,
        out=checkpoint,
        seed=arguments.seed,
        device="cpu",
        batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate,
        options=options,
        max_steps_per_epoch=arguments.steps_per_epoch,
        progress=False,
        log=lambda _line: None,
    )
    training_seconds = time.perf_counter() - started
    evaluation = evaluate(data_dir=test_dir, checkpoint=result.checkpoint, device="cpu")
    model = _model(arch, options, info.in_channels, info.num_classes)
    return {
        "model": name,
        "parameters": count_parameters(model),
        "gmacs_256": round(macs_at(model, info.in_channels, SPEED_SIZE) / 1e9, 3),
        "images_per_s": round(images_per_second(model, info.in_channels, arguments.speed_iterations), 1),
        "peak_memory_mib": round(peak_inference_memory_mib(arch, options, info.in_channels, info.num_classes), 1),
        "dice": evaluation["dice"],
        "hd95": evaluation["hd95"],
        "sensitivity_small": evaluation["lesion_sensitivity_small"],
        "sensitivity_large": evaluation["lesion_sensitivity_large"],
        "training_s": round(training_seconds, 1),
        "best_epoch": result.best_epoch,
    }


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: list[dict[str, Any]], arguments: argparse.Namespace) -> str:
    header = (
        "| model | parameters | GMACs @256² | CPU images/s (batch 8, 256²) | peak memory MiB | Dice | HD95 px "
        "| sensitivity small | sensitivity large | training s |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['gmacs_256']:.2f} | {row['images_per_s']:.1f} "
            f"| {row['peak_memory_mib']:.0f} | {_cell(row['dice'])} | {_cell(row['hd95'], 2)} "
            f"| {_cell(row['sensitivity_small'])} | {_cell(row['sensitivity_large'])} | {row['training_s']:.0f} |"
        )
    budget = (
        f"Same budget for every model: {arguments.epochs} epochs × {arguments.steps_per_epoch} steps, batch "
        f"{arguments.batch_size}, {arguments.size}×{arguments.size}, learning rate {arguments.learning_rate}, "
        f"seed {arguments.seed}; SYNTHETIC thyroid-ultrasound-like data "
        f"({arguments.train_count} training images, {arguments.test_count} test images of another seed); "
        f"{os.cpu_count()} CPU cores."
    )
    return "\n".join(lines) + "\n\n" + budget + "\n"


def main() -> None:
    arguments = parse_arguments()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="consilium-segmentation-bench-") as temporary:
        arguments.work_dir = arguments.work_dir or Path(temporary)
        arguments.work_dir.mkdir(parents=True, exist_ok=True)
        train_dir, test_dir = prepare_data(arguments, arguments.work_dir)
        runs: list[tuple[str, str, dict[str, Any]]] = [(a, a, {}) for a in arguments.architectures.split(",")]
        if not arguments.no_trade_off:
            runs += [(name, "combined", options) for name, options in TRADE_OFF.items()]
        rows = []
        for name, arch, options in runs:
            print(f"training and measuring {name} ...", flush=True)
            row = run_one(name, arch, options, arguments, train_dir, test_dir)
            print(f"  {json.dumps(row)}", flush=True)
            rows.append(row)
    text = table(rows, arguments)
    print()
    print(text)
    if arguments.markdown:
        arguments.markdown.write_text(text)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
