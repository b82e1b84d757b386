"""Inference as a plain module (no Django, no Celery): decoded pixels in,
an AI result out, with a quality gate that abstains on unusable images.

    engine = InferenceEngine("ai_engine/weights/combined-thyroid-synthetic.pt")
    [result] = engine.run([InferenceInput(name="frame", pixels=pixels, modality="ultrasound")])
"""

from ai_engine.inference.engine import InferenceEngine
from ai_engine.inference.measurements import lesion_mask, lesion_probability, measure_lesions
from ai_engine.inference.quality import (
    BLANK,
    BLURRED,
    CHANNEL_MISMATCH,
    MINIMUM_CONTRAST,
    MINIMUM_SHARPNESS,
    MINIMUM_SIDE_PX,
    NOT_FINITE,
    TOO_SMALL,
    UNSUPPORTED_LAYOUT,
    WRONG_MODALITY,
    check_quality,
)
from ai_engine.inference.records import (
    STATUS_ABSTAINED,
    STATUS_DONE,
    InferenceError,
    InferenceInput,
    InferenceResult,
    QualityVerdict,
)

__all__ = [
    "BLANK",
    "BLURRED",
    "CHANNEL_MISMATCH",
    "MINIMUM_CONTRAST",
    "MINIMUM_SHARPNESS",
    "MINIMUM_SIDE_PX",
    "NOT_FINITE",
    "STATUS_ABSTAINED",
    "STATUS_DONE",
    "TOO_SMALL",
    "UNSUPPORTED_LAYOUT",
    "WRONG_MODALITY",
    "InferenceEngine",
    "InferenceError",
    "InferenceInput",
    "InferenceResult",
    "QualityVerdict",
    "check_quality",
    "lesion_mask",
    "lesion_probability",
    "measure_lesions",
]
