#!/usr/bin/env python
"""Benchmark: the AI pipeline with a real Redis broker and real Celery
workers, against the bare model time for the same images.

    python bench/inference_pipeline.py [--images 40] [--backlog 48]
        [--database-url postgres://postgres@127.0.0.1:5432/consilium_bench_ai]
        [--redis-url redis://127.0.0.1:6379/14] [--cores 2]

Set-up: the PostgreSQL database named is dropped and created afresh,
migrated, and given (through the services) a recruiting trial with enrolled,
randomized thyroid participants and the shipped thyroid checkpoint deployed;
the Redis database named is emptied. The images are copies of the real
ultrasound file pydicom ships (examples_rgb_color.dcm, 240 × 320 RGB), each
made unique by one pixel and its SOP Instance UID, uploaded through
imaging.services.image_upload as a coordinator would.

Latency: one worker process (`celery -A config worker -Q inference`,
--latency-threads torch threads), images uploaded one at a time, each
waited for. Per image: the upload call (validation, de-identification,
previews, commit, AI result queued, job published), the pipeline (upload
returned → result stored: the commit of its `ai_result.store` audit event,
read from the database, so that this process can poll gently and not slow
the worker), and upload start → result stored. Two baselines, in this
process with the same threads, on the same stored images: the model alone
(InferenceEngine.run on the decoded image: quality gate, forward pass,
post-processing) and the bare job (the same work as a script without the
platform: read and decode the file, run the model, write the mask PNG and
the probability map). Overhead ratios at p50: pipeline / bare job (what the
broker, the worker, the database, the claims and the audit trail add; the
target is ≤ 1.3) and pipeline / model alone.

Throughput under backlog: --backlog images are uploaded while no worker
runs, then workers start and drain the queue; images/s = images / (last
finished − first started). Configurations: 1 worker process × --cores
threads and --cores processes × 1 thread, each with micro-batching off
(AI_INFERENCE_MAX_BATCH=1) and on (--max-batch, 4).

The last line is one JSON object with every figure. A benchmark, not a test:
it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from randomization_concurrency import build_trial, percentile, recreate_database, start_django  # noqa: E402

SOURCE_FILE = "examples_rgb_color.dcm"
POLL_SECONDS = 0.02


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40, help="Images for the latency phase.")
    parser.add_argument("--backlog", type=int, default=48, help="Images per throughput configuration.")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/consilium_bench_ai")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="CPU cores to use (threads × processes)."
    )
    parser.add_argument("--warm-up", type=int, default=3, help="Images processed before timing starts.")
    parser.add_argument("--max-batch", type=int, default=4, help="Micro-batch size of the batched configurations.")
    parser.add_argument(
        "--latency-threads",
        type=int,
        default=1,
        help="Torch threads of the latency phase's worker and baselines (1: as deployed, one per worker process).",
    )
    arguments = parser.parse_args()
    if arguments.images < 1 or arguments.backlog < 1 or arguments.cores < 1:
        parser.error("--images, --backlog and --cores must be at least 1")
    return arguments


class ImageMaker:
    """Unique copies of one real ultrasound file."""

    def __init__(self) -> None:
        import pydicom
        from pydicom.data import get_testdata_file

        self.dataset = pydicom.dcmread(get_testdata_file(SOURCE_FILE))
        self.count = 0

    def next(self) -> bytes:
        import io

        from pydicom.uid import generate_uid

        self.count += 1
        dataset = self.dataset.copy()
        pixels = bytearray(dataset.PixelData)
        position = (self.count * 7919) % len(pixels)
        pixels[position] = (pixels[position] + 1 + self.count) % 256
        dataset.PixelData = bytes(pixels)
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        return buffer.getvalue()


class Bench:
    def __init__(self, arguments: argparse.Namespace, media_root: Path, log_folder: Path) -> None:
        self.arguments = arguments
        self.media_root = media_root
        self.log_folder = log_folder
        self.maker = ImageMaker()
        self.uploads = 0

    def set_up(self) -> None:
        from ai_engine import services as ai_services
        from trial.actors import Actor
        from trial.models import Indication, Participant

        trial, owners = build_trial(60, seed=1)
        self.trial = trial
        from django.contrib.auth import get_user_model

        from randomization.services import participant_randomize

        users = {user.pk: user for user in get_user_model().objects.filter(pk__in=set(owners.values()))}
        self.participants = []
        for participant in Participant.objects.select_related("screening", "site", "trial").order_by("pk"):
            if participant.indication != Indication.THYROID:
                continue
            user = users[owners[participant.pk]]
            participant_randomize(
                actor=Actor(user=user, client_ip="127.0.0.1", request_id="bench"), participant=participant
            )
            participant.refresh_from_db()
            self.participants.append((participant, user))
        system = Actor.system("benchmark")
        model_version = ai_services.model_register(
            actor=system,
            path=ai_services.SHIPPED_CHECKPOINT,
            name="combined-thyroid-synthetic",
            version="1.0",
            indication="thyroid",
        )
        ai_services.model_activate(actor=system, trial=trial, model_version=model_version, reason="Benchmark")
        self.model_version = model_version

    def upload(self) -> Any:
        from imaging.services import image_upload
        from trial.actors import Actor

        participant, user = self.participants[self.uploads % len(self.participants)]
        self.uploads += 1
        outcome = image_upload(
            actor=Actor(user=user, client_ip="127.0.0.1", request_id="bench"),
            participant=participant,
            name=f"scan-{self.uploads}.dcm",
            data=self.maker.next(),
        )
        if outcome.status != "accepted":
            raise SystemExit(f"upload {self.uploads} was {outcome.status}: {outcome.reason}")
        return outcome.image

    def worker(self, *, processes: int, threads: int, batch: int, name: str) -> Any:
        from config.workers import start_worker

        env = {
            "DATABASE_URL": self.arguments.database_url,
            "CELERY_BROKER_URL": self.arguments.redis_url,
            "MEDIA_ROOT": str(self.media_root),
            "AI_TORCH_THREADS": str(threads),
            "AI_INFERENCE_MAX_BATCH": str(batch),
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
        }
        process = start_worker(
            env=env,
            log_path=self.log_folder / f"{name}.log",
            concurrency=processes,
            hostname=f"{name}@%h",
            loglevel="INFO",
        )
        wait_for_text(self.log_folder / f"{name}.log", "ready.", process)
        return process


def wait_for_text(path: Path, text: str, process: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def wait_finished(image_ids: list[int], timeout: float = 600.0) -> None:
    from ai_engine.models import AiResult, AiResultStatus

    deadline = time.monotonic() + timeout
    finished = (AiResultStatus.DONE, AiResultStatus.ABSTAINED, AiResultStatus.FAILED)
    while AiResult.objects.filter(image_id__in=image_ids, status__in=finished).count() < len(image_ids):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the AI results")
        time.sleep(0.05)


def latency_phase(bench: Bench, images: int, warm_up: int, threads: int) -> dict[str, Any]:
    from ai_engine.models import AiResult, AiResultStatus
    from config.workers import stop_worker
    from trial.models import AuditEvent

    worker = bench.worker(processes=1, threads=threads, batch=bench.arguments.max_batch, name="latency")
    upload_ms: list[float] = []
    pipeline_ms: list[float] = []
    total_ms: list[float] = []
    image_ids: list[int] = []
    finished = (AiResultStatus.DONE, AiResultStatus.ABSTAINED, AiResultStatus.FAILED)
    try:
        for index in range(warm_up + images):
            started = time.time()
            image = bench.upload()
            uploaded = time.time()
            while not AiResult.objects.filter(image=image, status__in=finished).exists():
                time.sleep(POLL_SECONDS)
            result = AiResult.objects.get(image=image)
            stored_event = AuditEvent.objects.get(
                action="ai_result.store", object_type="ai_engine.airesult", object_id=str(result.pk)
            )
            stored = stored_event.occurred_at.timestamp()
            # Let the worker finish the exports that follow the result.
            time.sleep(0.1)
            if index < warm_up:
                continue
            image_ids.append(image.pk)
            upload_ms.append((uploaded - started) * 1000)
            pipeline_ms.append((stored - uploaded) * 1000)
            total_ms.append((stored - started) * 1000)
    finally:
        stop_worker(worker)
    results = list(AiResult.objects.filter(image_id__in=image_ids))
    statuses = {status: sum(1 for r in results if r.status == status) for status in {r.status for r in results}}
    worker_runtime = [r.runtime_ms for r in results if r.runtime_ms is not None]
    return {
        "image_ids": image_ids,
        "upload_ms": upload_ms,
        "pipeline_ms": pipeline_ms,
        "total_ms": total_ms,
        "statuses": statuses,
        "worker_model_runtime_ms": worker_runtime,
    }


def baselines_ms(bench: Bench, image_ids: list[int], threads: int, warm_up: int) -> tuple[list[float], list[float]]:
    """The model alone and the bare job, one image at a time, in this process."""
    import torch

    from ai_engine import jobs, services
    from ai_engine.inference import InferenceEngine
    from imaging.models import Image

    torch.set_num_threads(threads)
    engine = InferenceEngine(services.stored_path(bench.model_version), device="cpu", max_batch=1)
    images = list(Image.objects.filter(pk__in=image_ids).order_by("pk"))
    inputs = [jobs.load_input(image).input for image in images]
    for item in inputs[:warm_up]:
        engine.run([item])
    model: list[float] = []
    for item in inputs:
        started = time.perf_counter()
        engine.run([item])
        model.append((time.perf_counter() - started) * 1000)
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for index, image in enumerate(images):
            started = time.perf_counter()
            bare_job(engine, image, Path(folder) / str(index))
            bare.append((time.perf_counter() - started) * 1000)
    return model, bare


def bare_job(engine: Any, image: Any, target: Path) -> None:
    """What a script without the platform does for one image: read and decode
    the file, run the model, write the mask and the probability map."""
    import io

    import numpy as np
    import pydicom
    from PIL import Image as PILImage

    from imaging.pipeline import dicom

    dataset = pydicom.dcmread(Path(image.file.path))
    pixels = dicom.to_display(dataset, dicom.decode(dataset))
    from ai_engine.inference import InferenceInput

    [outcome] = engine.run([InferenceInput("bare", pixels[0] if pixels.shape[0] == 1 else pixels, "ultrasound")])
    target.mkdir()
    if outcome.mask is not None:
        PILImage.fromarray((outcome.mask * 255).astype(np.uint8)).save(target / "mask.png", compress_level=1)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, probability=outcome.probability)
        (target / "probability.npz").write_bytes(buffer.getvalue())


def throughput_phase(bench: Bench, *, processes: int, threads: int, batch: int, backlog: int) -> dict[str, Any]:
    from django.db.models import Max, Min

    from ai_engine.models import AiResult
    from config.workers import stop_worker

    image_ids = [bench.upload().pk for _ in range(backlog)]  # no worker runs: the jobs wait on the broker
    name = f"p{processes}t{threads}b{batch}"
    worker = bench.worker(processes=processes, threads=threads, batch=batch, name=name)
    try:
        wait_finished(image_ids)
    finally:
        stop_worker(worker)
    results = AiResult.objects.filter(image_id__in=image_ids)
    span = results.aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    batches = [size for size in results.values_list("batch_size", flat=True) if size]
    return {
        "processes": processes,
        "threads": threads,
        "max_batch": batch,
        "images": backlog,
        "seconds": round(seconds, 3),
        "images_per_s": round(backlog / seconds, 2),
        "mean_batch_size": round(statistics.mean(batches), 2) if batches else None,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.50), 1),
        "p95": round(percentile(values, 0.95), 1),
        "mean": round(statistics.mean(values), 1),
    }


def main() -> None:
    arguments = parse_arguments()
    import redis

    redis.Redis.from_url(arguments.redis_url).flushdb()
    recreate_database(arguments.database_url)
    work = Path(tempfile.mkdtemp(prefix="consilium-bench-ai-"))
    media_root = work / "media"
    media_root.mkdir()
    os.environ["MEDIA_ROOT"] = str(media_root)
    os.environ["CELERY_BROKER_URL"] = arguments.redis_url
    os.environ["CONSILIUM_VAR_DIR"] = str(work / "var")
    start_django(arguments.database_url)
    bench = Bench(arguments, media_root, work)
    print("Setting up the trial ...", flush=True)
    bench.set_up()
    cores = arguments.cores
    try:
        print(
            f"Latency: {arguments.images} images one at a time, 1 worker × {arguments.latency_threads} thread(s) ...",
            flush=True,
        )
        threads = arguments.latency_threads
        latency = latency_phase(bench, arguments.images, arguments.warm_up, threads)
        model, bare = baselines_ms(bench, latency["image_ids"], threads, arguments.warm_up)
        figures: dict[str, Any] = {
            "cores": cores,
            "latency_threads": threads,
            "images": arguments.images,
            "statuses": latency["statuses"],
            "upload_ms": summary(latency["upload_ms"]),
            "pipeline_ms": summary(latency["pipeline_ms"]),
            "upload_to_stored_ms": summary(latency["total_ms"]),
            "bare_job_ms": summary(bare),
            "model_alone_ms": summary(model),
            "worker_model_runtime_ms": summary(latency["worker_model_runtime_ms"]),
        }
        figures["overhead_ratio_p50"] = round(figures["pipeline_ms"]["p50"] / figures["bare_job_ms"]["p50"], 2)
        figures["ratio_to_model_alone_p50"] = round(figures["pipeline_ms"]["p50"] / figures["model_alone_ms"]["p50"], 2)
        keys = ("upload_ms", "pipeline_ms", "upload_to_stored_ms", "bare_job_ms", "model_alone_ms")
        for key in (*keys, "worker_model_runtime_ms"):
            row = figures[key]
            print(f"  {key:<24} p50 {row['p50']:>7.1f}  p95 {row['p95']:>7.1f}  mean {row['mean']:>7.1f}")
        print(
            f"  overhead ratio at p50: pipeline / bare job {figures['overhead_ratio_p50']}, "
            f"pipeline / model alone {figures['ratio_to_model_alone_p50']}",
            flush=True,
        )

        batch = arguments.max_batch
        configurations = [(1, cores, 1), (1, cores, batch)]
        if cores > 1:
            configurations += [(cores, 1, 1), (cores, 1, batch)]
        figures["throughput"] = []
        for processes, threads, batch in configurations:
            print(
                f"Throughput: {arguments.backlog} waiting images, {processes} process(es) × {threads} thread(s), "
                f"max batch {batch} ...",
                flush=True,
            )
            row = throughput_phase(bench, processes=processes, threads=threads, batch=batch, backlog=arguments.backlog)
            print(f"  {row['images_per_s']:.2f} images/s (mean batch {row['mean_batch_size']})", flush=True)
            figures["throughput"].append(row)
        print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
