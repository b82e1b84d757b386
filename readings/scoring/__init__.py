"""Scoring and validation of the clinical case report forms, without models
or views: ACR TI-RADS for thyroid ultrasound, the Swede score and IFCPC 2011
terminology for colposcopy. Each form's `FIELDS` describes its fields (name,
label, kind, choices, required, help) for the web form and the API.

Importing this package needs no Django settings; only the FIGO and TNM
choices, which come from trial.models, do, when they are read."""

from readings.scoring.colposcopy import FIELDS as COLPOSCOPY_FIELDS
from readings.scoring.colposcopy import ColposcopyRead, swede_total, validate_colposcopy_read
from readings.scoring.errors import NON_FIELD, ReadValidationError
from readings.scoring.fields import Choice, FieldSpec
from readings.scoring.thyroid import FIELDS as THYROID_FIELDS
from readings.scoring.thyroid import (
    FNA_LABELS,
    SIZE_THRESHOLDS_MM,
    TIRADS_LEVELS,
    FnaRecommendation,
    ThyroidRead,
    fna_recommendation,
    tirads_category,
    tirads_feature_points,
    tirads_points,
    validate_thyroid_read,
)

__all__ = [
    "COLPOSCOPY_FIELDS",
    "FNA_LABELS",
    "NON_FIELD",
    "SIZE_THRESHOLDS_MM",
    "THYROID_FIELDS",
    "TIRADS_LEVELS",
    "Choice",
    "ColposcopyRead",
    "FieldSpec",
    "FnaRecommendation",
    "ReadValidationError",
    "ThyroidRead",
    "fna_recommendation",
    "swede_total",
    "tirads_category",
    "tirads_feature_points",
    "tirads_points",
    "validate_colposcopy_read",
    "validate_thyroid_read",
]
