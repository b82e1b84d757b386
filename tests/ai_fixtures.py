"""Fixtures shared by the AI tests (a plugin, see the root conftest.py): an
engine on the shipped thyroid checkpoint, one outcome that found a nodule
and one that abstained, a second checkpoint with another sha256; and
`make_images`, image rows for tests that need many results, not pixels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ai_engine import services
from ai_engine.checkpoint import load_checkpoint, save_checkpoint
from ai_engine.inference import InferenceEngine, InferenceInput, InferenceResult
from ai_engine.synthetic import thyroid_frame
from imaging.models import Image, ImageKind, ImageStatus, ImagingStudy
from tests.torch_threads import one_torch_thread

OUTCOME_SIZE = 128


@pytest.fixture(scope="module")
def engine() -> Iterator[InferenceEngine]:
    torch.manual_seed(0)
    with one_torch_thread():
        yield InferenceEngine(services.SHIPPED_CHECKPOINT, device="cpu", max_batch=1)


@pytest.fixture(scope="module")
def found(engine: InferenceEngine) -> InferenceResult:
    """A 128 px synthetic frame with a large nodule, spacing (0.1, 0.2) mm."""
    frame = thyroid_frame(np.random.default_rng(3), OUTCOME_SIZE)
    [outcome] = engine.run([InferenceInput("nodule", frame.image, "ultrasound", (0.1, 0.2))])
    assert outcome.status == "done" and outcome.mask is not None and outcome.measurements["lesion_count"] >= 1
    return outcome


@pytest.fixture(scope="module")
def abstained(engine: InferenceEngine) -> InferenceResult:
    [outcome] = engine.run([InferenceInput("blank", np.zeros((OUTCOME_SIZE, OUTCOME_SIZE), np.uint8), "ultrasound")])
    assert outcome.status == "abstained"
    return outcome


@pytest.fixture(scope="session")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second thyroid checkpoint (the shipped weights, other metrics): another sha256."""
    torch.manual_seed(0)
    checkpoint = load_checkpoint(services.SHIPPED_CHECKPOINTS["thyroid"])
    path = tmp_path_factory.mktemp("retrained") / "combined-thyroid-retrained.pt"
    save_checkpoint(
        path,
        model=checkpoint.build_model(),
        architecture=checkpoint.architecture,
        training={**checkpoint.training, "note": "retrained"},
        metrics={**checkpoint.metrics, "dice": 0.5},
        preprocessing=checkpoint.preprocessing,
        categories=checkpoint.categories,
    )
    return path


_unique = count()


def make_images(participant: Any, how_many: int, *, device: tuple[str, str] | None, uploader: Any) -> list[Image]:
    """Accepted images of a participant (rows only: the figures here need
    many results, not pixels), in a study naming `device`, or in none."""
    study = None
    if device is not None:
        study = ImagingStudy.objects.create(
            participant=participant,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            kind=ImageKind.ULTRASOUND,
            device_manufacturer=device[0],
            device_model=device[1],
        )
    return Image.objects.bulk_create(
        Image(
            study=study,
            participant=participant,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            status=ImageStatus.ACCEPTED,
            kind=ImageKind.ULTRASOUND,
            source_sha256=hashlib.sha256(f"image-{next(_unique)}".encode()).hexdigest(),
            uploaded_by=uploader,
        )
        for _ in range(how_many)
    )
