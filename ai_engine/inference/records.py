"""What goes into the inference engine and what comes out: plain frozen
records, so that a Celery task can build them from a stored image and turn
the result into database rows without knowing anything about PyTorch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODALITIES = ("ultrasound", "photo")
STATUS_DONE = "done"
STATUS_ABSTAINED = "abstained"


class InferenceError(ValueError):
    """An input or an engine setting that the inference engine cannot work with."""


@dataclass(frozen=True)
class InferenceInput:
    """Decoded pixels of one image: (H, W) grey, (H, W, 3) RGB, or a cine loop
    (frames, H, W) / (frames, H, W, 3); any integer or float dtype."""

    name: str
    pixels: np.ndarray
    modality: str  # "ultrasound" or "photo"
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) mm per pixel, when known

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise InferenceError(
                f"Image {self.name!r} has modality {self.modality!r}; the engine knows {', '.join(MODALITIES)}."
            )
        if not isinstance(self.pixels, np.ndarray):
            raise InferenceError(
                f"Image {self.name!r}: pixels must be a numpy array, not {type(self.pixels).__name__}."
            )
        if self.pixel_spacing_mm is not None:
            spacing = tuple(self.pixel_spacing_mm)
            if len(spacing) != 2 or not all(math.isfinite(value) and value > 0 for value in spacing):
                raise InferenceError(
                    f"Image {self.name!r}: pixel spacing must be two positive millimetre values (row, column), "
                    f"got {self.pixel_spacing_mm!r}."
                )


@dataclass(frozen=True)
class QualityVerdict:
    """Whether an image is fit for the model (CONSORT-AI 5(iii)). A refusal's
    reason starts with a stable code ("blank: ...", see quality.py) followed by
    words a reader understands; figures are the measured values behind it."""

    ok: bool
    reason: str
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def code(self) -> str:
        """The stable part of the reason ("" when the image passed)."""
        return self.reason.split(":", 1)[0] if self.reason else ""


@dataclass(frozen=True)
class InferenceResult:
    status: str  # "done" or "abstained"
    reason: str  # why it abstained ("" when done)
    quality: QualityVerdict
    mask: np.ndarray | None  # uint8 (H, W) 0/1 at the (key) frame's native size
    probability: np.ndarray | None  # float16 (H, W) lesion probability
    frame_index: int | None  # which frame of a cine loop was judged
    measurements: dict[str, Any]
    category: str | None
    category_probability: float | None
    category_probabilities: dict[str, float]
    model_sha256: str
    device: str
    runtime_ms: float
