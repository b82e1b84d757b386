#!/usr/bin/env python
"""Benchmark: bare model time per image with the shipped checkpoint on the
CPU, one frame per forward pass against micro-batches.

    python bench/inference_model.py [--count 32] [--batch 8] [--size 128] [--threads 1] [--repeats 3]

N synthetic thyroid frames (ai_engine.synthetic) are pre-processed once
(scaled and resized to the network size); only the forward pass is timed,
under torch.inference_mode, after one warm-up pass each way, the best of
--repeats. Prints images/s at batch 1 and at --batch and the gain; the last
line is one JSON object. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ai_engine.checkpoint import load_checkpoint  # noqa: E402
from ai_engine.evaluation import resize_images  # noqa: E402
from ai_engine.synthetic import thyroid_frame  # noqa: E402

CHECKPOINT = ROOT / "ai_engine" / "weights" / "combined-thyroid-synthetic.pt"


def seconds_for(model: torch.nn.Module, images: torch.Tensor, batch: int, repeats: int) -> float:
    """Best wall time over repeats for all images in forward passes of `batch`."""
    with torch.inference_mode():
        model(images[:batch])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for start in range(0, len(images), batch):
                model(images[start : start + batch])
            best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic frames before resizing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    checkpoint = load_checkpoint(CHECKPOINT)
    model = checkpoint.build_model()
    network_size = int(checkpoint.preprocessing["image_size"])
    frames = [thyroid_frame(np.random.default_rng(index), arguments.size).image for index in range(arguments.count)]
    scaled = torch.from_numpy(np.stack(frames).astype(np.float32) / 255)[:, None]
    images = resize_images(scaled, (network_size, network_size)).contiguous()

    single = seconds_for(model, images, 1, arguments.repeats)
    batched = seconds_for(model, images, arguments.batch, arguments.repeats)
    row = {
        "images": arguments.count,
        "network_size": network_size,
        "threads": arguments.threads,
        "batch": arguments.batch,
        "ms_per_image_batch_1": round(single / arguments.count * 1000, 2),
        "ms_per_image_batched": round(batched / arguments.count * 1000, 2),
        "images_per_second_batch_1": round(arguments.count / single, 1),
        "images_per_second_batched": round(arguments.count / batched, 1),
        "gain": round(single / batched, 2),
        "checkpoint_sha256": checkpoint.sha256,
        "torch": torch.__version__,
    }
    print(f"{arguments.count} synthetic frames at {network_size} × {network_size}, CPU, {arguments.threads} thread(s)")
    print(f"batch 1: {row['ms_per_image_batch_1']} ms/image, {row['images_per_second_batch_1']} images/s")
    print(
        f"batch {arguments.batch}: {row['ms_per_image_batched']} ms/image, "
        f"{row['images_per_second_batched']} images/s (gain ×{row['gain']})"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
