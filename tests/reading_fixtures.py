"""Fixtures of the readings tests (a plugin, see the root conftest.py): the
shipped models deployed, a panel of three blinded readers, and `make_case`,
a randomized participant in the arm asked for, with real images accepted
and (optionally) their AI results computed in-process by the shipped
checkpoint; plus valid form payloads for both forms."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from ai_engine import jobs
from ai_engine import services as ai_services
from ai_engine.models import AiResult, ModelVersion
from ai_engine.synthetic import colposcopy_frame
from imaging import services as imaging_services
from imaging.models import Image
from randomization.models import Allocation, Arm
from randomization.services import participant_randomize
from readings.models import ReadingTask, TaskKind
from tests.conftest import actor_for
from tests.imaging_files import real_dicom, ultrasound_dicom
from trial.models import Participant, Role, Trial

# Valid reads. Thyroid: solid (2) + hypoechoic (2) + wider-than-tall (0) +
# smooth (0) + no foci (0) = 4 points → TR4; 18 mm ≥ 15 mm → FNA.
THYROID_READ: dict[str, Any] = {
    "composition": "solid",
    "echogenicity": "hypoechoic",
    "shape": "wider_than_tall",
    "margin": "smooth",
    "echogenic_foci": ["none"],
    "largest_diameter_mm": 18,
    "cancer_suspected": False,
    "confidence": 4,
    "time_spent_s": 95,
    "note": "",
}
# Colposcopy: a normal, adequate examination (Swede total 0).
COLPOSCOPY_READ: dict[str, Any] = {
    "adequacy": "adequate",
    "scj_visibility": "completely_visible",
    "transformation_zone": 1,
    "swede_acetowhite": 0,
    "swede_margins_surface": 0,
    "swede_vessels": 0,
    "swede_lesion_size": 0,
    "swede_iodine": 0,
    "impression": "normal",
    "biopsy_recommended": False,
    "confidence": 3,
    "time_spent_s": 60,
    "note": "",
}


def valid_read(indication: str) -> dict[str, Any]:
    return dict(THYROID_READ if indication == "thyroid" else COLPOSCOPY_READ)


_uploads = count(1)


def _another_copy(name: str, n: int) -> bytes:
    """One of pydicom's files with its instance number changed: another
    file to the upload's duplicate check, the same pixels."""
    dataset = pydicom.dcmread(io.BytesIO(real_dicom(name)))
    dataset.InstanceNumber = n
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def colposcopy_png(seed: int = 5, size: int = 256) -> bytes:
    frame = colposcopy_frame(np.random.default_rng(seed), size)
    buffer = io.BytesIO()
    PILImage.fromarray(frame.image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Case:
    participant: Participant
    arm: str
    images: list[Image]
    ai_results: list[AiResult]

    def task(self, kind: str = TaskKind.CLINICAL, **filters: Any) -> ReadingTask:
        return ReadingTask.objects.get(participant=self.participant, kind=kind, **filters)

    def tasks(self, kind: str) -> list[ReadingTask]:
        return list(ReadingTask.objects.filter(participant=self.participant, kind=kind).order_by("pk"))


def _deploy(trial: Trial, admin: Any, indication: str) -> ModelVersion:
    key = "thyroid" if indication == "thyroid" else "cervical"
    existing = ModelVersion.objects.filter(indication=indication).first()
    model_version = existing or ai_services.model_register(
        actor=ai_services.AI_ENGINE,
        path=ai_services.SHIPPED_CHECKPOINTS[key],
        name=f"combined-{key}-synthetic",
        version="1.0",
        indication=indication,
    )
    if not model_version.deployments.filter(trial=trial, active=True).exists():
        ai_services.model_activate(
            actor=actor_for(admin), trial=trial, model_version=model_version, reason="Deployed for the test"
        )
    return model_version


@pytest.fixture
def panel(recruiting: Trial, users: dict[str, Any], make_user: Callable[..., Any]) -> list[Any]:
    """Three blinded readers (trial-wide): the users fixture's and two more."""
    return [users[Role.BLINDED_READER]] + [
        make_user(f"panel-{n}", Role.BLINDED_READER, trial=recruiting) for n in (2, 3)
    ]


@pytest.fixture
def make_case(
    recruiting: Trial,
    users: dict[str, Any],
    enroll: Callable[..., Participant],
    block_scheme: Any,
    coordinator: Any,
    django_capture_on_commit_callbacks: Any,
) -> Callable[..., Case]:
    """make_case(arm, indication="thyroid", images=("ybr",), ai=True): a
    participant randomized to `arm` (others randomized on the way are
    left without images, so they have no tasks) with accepted images:
    "ybr" pydicom's 30-frame colour cine with pixel spacing, "palette" its
    palette-colour image, "grey" a synthetic 8-bit grey ultrasound,
    "photo" a synthetic colposcopy photograph. With ai=True the shipped
    model judges them in-process."""

    def make(arm: str, indication: str = "thyroid", images: tuple[str, ...] | None = None, ai: bool = True) -> Case:
        if ai:
            _deploy(recruiting, users[Role.TRIAL_ADMIN], indication)
        for _ in range(24):
            participant = enroll(indication=indication)
            participant_randomize(actor=actor_for(coordinator), participant=participant)
            if Allocation.objects.get(participant=participant).arm == arm:
                break
        else:  # pragma: no cover - permuted blocks of 2–6 reach both arms
            raise AssertionError(f"no participant reached the {arm} arm")
        kinds = images or (("ybr",) if indication == "thyroid" else ("photo",))
        n = next(_uploads)
        files = {
            "ybr": lambda: ("cine.dcm", _another_copy("examples_ybr_color.dcm", n)),
            "palette": lambda: ("palette.dcm", _another_copy("examples_palette.dcm", n)),
            "grey": lambda: ("grey.dcm", ultrasound_dicom(rows=96, columns=128, monochrome_bits=8, seed=n)),
            "photo": lambda: ("colposcopy.png", colposcopy_png(seed=n)),
        }
        accepted = []
        for kind in kinds:
            name, data = files[kind]()
            with django_capture_on_commit_callbacks(execute=True):
                outcome = imaging_services.image_upload(
                    actor=actor_for(coordinator), participant=participant, name=name, data=data
                )
            assert outcome.status == "accepted" and outcome.image is not None, outcome.reason
            accepted.append(outcome.image)
        results: list[AiResult] = []
        if ai:
            for image in accepted:
                for queued in AiResult.objects.filter(image=image):
                    results.extend(jobs.process(queued.pk))
        participant.refresh_from_db()
        return Case(participant, arm, accepted, results)

    return make


@pytest.fixture
def ai_case(make_case: Callable[..., Case]) -> Case:
    """A thyroid participant in the AI-assisted arm with its AI result."""
    return make_case(Arm.AI_ASSISTED)


@pytest.fixture
def specialist_case(make_case: Callable[..., Case]) -> Case:
    """A thyroid participant in the specialist-only arm; its AI result exists (shadow mode)."""
    return make_case(Arm.SPECIALIST_ONLY)
