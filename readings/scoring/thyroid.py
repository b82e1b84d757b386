"""ACR TI-RADS scoring and the thyroid ultrasound case report form.

Sources
- Tessler FN, Middleton WD, Grant EG, et al. ACR Thyroid Imaging, Reporting
  and Data System (TI-RADS): White Paper of the ACR TI-RADS Committee.
  J Am Coll Radiol 2017;14(5):587–595. doi:10.1016/j.jacr.2017.01.046.
  Its chart (Figure 1) gives the points of every feature, the TR levels, the
  size thresholds for FNA and follow-up, and the notes applied below.
- Grant EG, Tessler FN, Hoang JK, et al. Thyroid Ultrasound Reporting
  Lexicon: White Paper of the ACR TI-RADS Committee. J Am Coll Radiol
  2015;12(12 Pt A):1272–1279 (the terms and their definitions).
- Tessler FN, Middleton WD, Grant EG. Thyroid Imaging Reporting and Data
  System (TI-RADS): A User's Guide. Radiology 2018;287(1):29–36.

What is implemented, and the choices made where the chart is silent
- Composition, echogenicity, shape and margin: one choice each. Echogenic
  foci: a multiple choice whose points add up ("select all that apply").
- Spongiform: "do not add further points for other categories". A spongiform
  nodule scores 0 whatever else is recorded; the other features are kept in
  the read but not scored.
- The chart's notes for features that cannot be assessed: composition that
  cannot be determined because of calcification scores 2, echogenicity that
  cannot be determined scores 1, a margin that cannot be determined scores 0.
  They are choices of their own, so the record says which it was.
- "Anechoic applies to cystic or almost completely cystic nodules": the form
  refuses anechoic with a mixed, solid or undetermined composition (a
  spongiform nodule's echogenicity is not scored, so it is not checked).
- The chart's single 0-point option "none or large comet-tail artifacts" is
  two codes here, `none` and `large_comet_tail`, so that the record says
  which; `none` cannot be combined with any other echogenic focus.
- Levels: 0 points TR1, 2 TR2, 3 TR3, 4–6 TR4, 7 or more TR5. The chart has
  no level for a total of 1 point, which is reachable (e.g. a cystic nodule
  with a macrocalcification). It is TR2 here: TR1 is the chart's 0-point
  level, and a 1-point nodule, like every TR1 and TR2 nodule, needs neither
  FNA nor follow-up, so the choice changes no recommendation.
- Size thresholds on the largest diameter, the chart's centimetres in
  millimetres: TR3 FNA ≥ 25 mm, follow-up ≥ 15 mm; TR4 FNA ≥ 15 mm,
  follow-up ≥ 10 mm; TR5 FNA ≥ 10 mm, follow-up ≥ 5 mm; TR1 and TR2 no FNA.
  At a threshold the stronger recommendation applies (the chart's "≥").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from readings.scoring.errors import NON_FIELD, ReadValidationError
from readings.scoring.fields import (
    CONFIDENCE,
    NOTE,
    TIME_SPENT,
    Choice,
    FieldSpec,
    FormCleaner,
    as_number,
    clean_common,
    field_map,
    points_table,
    reference_choices,
)

FnaRecommendation = Literal["fna", "follow-up", "none"]

SPONGIFORM = "spongiform"
ANECHOIC = "anechoic"
NO_FOCI = "none"
# Compositions with which "anechoic" is a contradiction (see the docstring).
_NOT_CYSTIC = ("mixed_cystic_solid", "solid", "indeterminate_calcification")

COMPOSITION = FieldSpec(
    name="composition",
    label="Composition",
    kind="choice",
    required=True,
    help="Choose one.",
    static_choices=(
        Choice("cystic", "Cystic or almost completely cystic", 0),
        Choice(
            SPONGIFORM,
            "Spongiform",
            0,
            "Composed predominantly (> 50 %) of small cystic spaces. No points are added for the other features.",
        ),
        Choice("mixed_cystic_solid", "Mixed cystic and solid", 1, "Score the other features on the solid component."),
        Choice("solid", "Solid or almost completely solid", 2),
        Choice("indeterminate_calcification", "Cannot be determined because of calcification", 2),
    ),
)
ECHOGENICITY = FieldSpec(
    name="echogenicity",
    label="Echogenicity",
    kind="choice",
    required=True,
    help="Choose one, compared with the adjacent thyroid tissue.",
    static_choices=(
        Choice(ANECHOIC, "Anechoic", 0, "Applies only to cystic or almost completely cystic nodules."),
        Choice("hyperechoic_isoechoic", "Hyperechoic or isoechoic", 1),
        Choice("hypoechoic", "Hypoechoic", 2),
        Choice("very_hypoechoic", "Very hypoechoic", 3, "More hypoechoic than the strap muscles."),
        Choice("indeterminate", "Cannot be determined", 1),
    ),
)
SHAPE = FieldSpec(
    name="shape",
    label="Shape",
    kind="choice",
    required=True,
    help="Assessed on a transverse image: height parallel to the beam, width perpendicular to it.",
    static_choices=(
        Choice("wider_than_tall", "Wider-than-tall", 0),
        Choice("taller_than_wide", "Taller-than-wide", 3),
    ),
)
MARGIN = FieldSpec(
    name="margin",
    label="Margin",
    kind="choice",
    required=True,
    help="Choose one.",
    static_choices=(
        Choice("smooth", "Smooth", 0),
        Choice("ill_defined", "Ill-defined", 0),
        Choice(
            "lobulated_irregular",
            "Lobulated or irregular",
            2,
            "Lobulated: protrusions into adjacent tissue. Irregular: jagged, spiculated or sharp angles.",
        ),
        Choice("extrathyroidal_extension", "Extra-thyroidal extension", 3, "Obvious invasion: malignancy."),
        Choice("indeterminate", "Cannot be determined", 0),
    ),
)
ECHOGENIC_FOCI = FieldSpec(
    name="echogenic_foci",
    label="Echogenic foci",
    kind="multiple_choice",
    required=True,
    help="Choose all that apply; their points add up. Choose 'None' when there are no echogenic foci.",
    static_choices=(
        Choice(NO_FOCI, "None", 0),
        Choice("large_comet_tail", "Large comet-tail artifacts", 0, "V-shaped, > 1 mm, in cystic components."),
        Choice("macrocalcifications", "Macrocalcifications", 1, "Cause acoustic shadowing."),
        Choice(
            "peripheral_calcifications",
            "Peripheral (rim) calcifications",
            2,
            "Complete or incomplete along the margin.",
        ),
        Choice("punctate", "Punctate echogenic foci", 3, "May have small comet-tail artifacts."),
    ),
)

TIRADS_LEVELS: tuple[Choice, ...] = (
    Choice("TR1", "TR1 — Benign"),
    Choice("TR2", "TR2 — Not suspicious"),
    Choice("TR3", "TR3 — Mildly suspicious"),
    Choice("TR4", "TR4 — Moderately suspicious"),
    Choice("TR5", "TR5 — Highly suspicious"),
)
LEVEL_CODES: tuple[str, ...] = tuple(str(level.value) for level in TIRADS_LEVELS)

MAX_DIAMETER_MM = 200.0
# Largest diameter (mm) at or above which FNA, and follow-up, are recommended.
SIZE_THRESHOLDS_MM: dict[str, tuple[float, float]] = {
    "TR3": (25.0, 15.0),
    "TR4": (15.0, 10.0),
    "TR5": (10.0, 5.0),
}
FNA_LABELS: dict[FnaRecommendation, str] = {
    "fna": "Fine-needle aspiration recommended",
    "follow-up": "Ultrasound follow-up recommended",
    "none": "No FNA or follow-up needed",
}

FEATURES: tuple[FieldSpec, ...] = (COMPOSITION, ECHOGENICITY, SHAPE, MARGIN, ECHOGENIC_FOCI)
FEATURE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FEATURES)
POINTS: dict[str, dict[Any, int]] = {spec.name: points_table(spec) for spec in FEATURES}

_TNM = (
    ("tnm_t", "T category (AJCC 8th)", "ThyroidT"),
    ("tnm_n", "N category (AJCC 8th)", "ThyroidN"),
    ("tnm_m", "M category (AJCC 8th)", "ThyroidM"),
)


def _tnm_field(name: str, label: str, vocabulary: str) -> FieldSpec:
    return FieldSpec(
        name=name,
        label=label,
        kind="choice",
        required=False,
        help="Only when cancer is suspected; the codes of the reference standard.",
        choices_from=lambda: reference_choices(vocabulary),
        required_if=("cancer_suspected", (True,)),
    )


FIELDS: tuple[FieldSpec, ...] = (
    *FEATURES,
    FieldSpec(
        name="largest_diameter_mm",
        label="Largest diameter",
        kind="number",
        required=True,
        help="Maximum diameter of the nodule in any plane, in millimetres.",
        min_value=0.0,
        max_value=MAX_DIAMETER_MM,
        unit="mm",
    ),
    FieldSpec(
        name="tirads_category",
        label="TI-RADS level",
        kind="choice",
        required=False,
        help="Optional: the level you arrived at. It is checked against the points of the features above.",
        static_choices=TIRADS_LEVELS,
    ),
    FieldSpec(
        name="cancer_suspected",
        label="Cancer suspected",
        kind="boolean",
        required=True,
        help="Yes if you suspect thyroid cancer; then give the TNM categories.",
    ),
    *(_tnm_field(name, label, vocabulary) for name, label, vocabulary in _TNM),
    CONFIDENCE,
    TIME_SPENT,
    NOTE,
)
_FIELDS_BY_NAME = field_map(FIELDS)


def _feature_points(
    composition: str, echogenicity: str, shape: str, margin: str, foci: tuple[str, ...]
) -> dict[str, int]:
    if composition == SPONGIFORM:
        return {name: 0 for name in FEATURE_NAMES}
    return {
        "composition": POINTS["composition"][composition],
        "echogenicity": POINTS["echogenicity"][echogenicity],
        "shape": POINTS["shape"][shape],
        "margin": POINTS["margin"][margin],
        "echogenic_foci": sum(POINTS["echogenic_foci"][focus] for focus in foci),
    }


def _clean_features(cleaner: FormCleaner) -> tuple[str, str, str, str, tuple[str, ...]] | None:
    values = [cleaner.choice(name) for name in FEATURE_NAMES[:4]]
    foci = cleaner.choices("echogenic_foci")
    if foci is None or any(value is None for value in values):
        return None
    composition, echogenicity, shape, margin = (str(value) for value in values)
    return composition, echogenicity, shape, margin, tuple(str(focus) for focus in foci)


def tirads_feature_points(features: Mapping[str, object]) -> dict[str, int]:
    """Points of each of the five features ({"composition": 2, ...}).
    Keys other than the five features are ignored; a missing or unknown
    feature raises ReadValidationError."""
    if not isinstance(features, Mapping):
        raise ReadValidationError({NON_FIELD: "The TI-RADS features must be a set of named fields."})
    cleaner = FormCleaner({name: features.get(name) for name in FEATURE_NAMES}, FEATURES, form_title="features")
    cleaned = _clean_features(cleaner)
    cleaner.finish()
    assert cleaned is not None
    return _feature_points(*cleaned)


def tirads_points(features: Mapping[str, object]) -> int:
    """Total ACR TI-RADS points of a nodule's five features."""
    return sum(tirads_feature_points(features).values())


def tirads_category(points: int) -> str:
    """TI-RADS level "TR1".."TR5" of a points total (1 point is TR2, see the
    module docstring)."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 0:
        raise ValueError(f"TI-RADS points must be a whole number of 0 or more, not {points!r}.")
    if points == 0:
        return "TR1"
    if points <= 2:
        return "TR2"
    if points == 3:
        return "TR3"
    if points <= 6:
        return "TR4"
    return "TR5"


def fna_recommendation(category: str, largest_diameter_mm: float) -> FnaRecommendation:
    """What the TI-RADS size thresholds recommend for a nodule of this level
    and largest diameter: "fna", "follow-up" or "none"."""
    if category not in LEVEL_CODES:
        raise ValueError(f"{category!r} is not a TI-RADS level; use one of {', '.join(LEVEL_CODES)}.")
    diameter = as_number(largest_diameter_mm)
    if diameter is None or diameter <= 0:
        raise ValueError(f"The largest diameter must be a number of millimetres above 0, not {largest_diameter_mm!r}.")
    if category not in SIZE_THRESHOLDS_MM:
        return "none"
    fna_at, follow_up_at = SIZE_THRESHOLDS_MM[category]
    if diameter >= fna_at:
        return "fna"
    if diameter >= follow_up_at:
        return "follow-up"
    return "none"


@dataclass(frozen=True)
class ThyroidRead:
    """A validated thyroid ultrasound read with its computed TI-RADS result.
    The TNM fields are "" when cancer is not suspected."""

    composition: str
    echogenicity: str
    shape: str
    margin: str
    echogenic_foci: tuple[str, ...]
    largest_diameter_mm: float
    cancer_suspected: bool
    tnm_t: str
    tnm_n: str
    tnm_m: str
    confidence: int
    time_spent_s: int
    note: str
    points: int
    category: str
    fna: FnaRecommendation

    def feature_points(self) -> dict[str, int]:
        return _feature_points(self.composition, self.echogenicity, self.shape, self.margin, self.echogenic_foci)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, e.g. for storing the read."""
        return {
            "composition": self.composition,
            "echogenicity": self.echogenicity,
            "shape": self.shape,
            "margin": self.margin,
            "echogenic_foci": list(self.echogenic_foci),
            "largest_diameter_mm": self.largest_diameter_mm,
            "cancer_suspected": self.cancer_suspected,
            "tnm_t": self.tnm_t,
            "tnm_n": self.tnm_n,
            "tnm_m": self.tnm_m,
            "confidence": self.confidence,
            "time_spent_s": self.time_spent_s,
            "note": self.note,
            "points": self.points,
            "feature_points": self.feature_points(),
            "category": self.category,
            "fna": self.fna,
        }


def _points_phrase(points: int, composition: str) -> str:
    phrase = f"{points} point{'' if points == 1 else 's'}"
    if composition == SPONGIFORM:
        phrase += " (a spongiform nodule scores no points for its other features)"
    return phrase


def validate_thyroid_read(data: Mapping[str, object]) -> ThyroidRead:
    """Clean and check one thyroid read. Raises ReadValidationError with
    every field's problem at once; returns the read with its points, level
    and FNA recommendation."""
    cleaner = FormCleaner(data, FIELDS, form_title="thyroid read")
    features = _clean_features(cleaner)
    if features is not None:
        composition, echogenicity, _, _, foci = features
        if echogenicity == ANECHOIC and composition in _NOT_CYSTIC:
            label = COMPOSITION.choice(composition).label.lower()
            cleaner.error(
                "echogenicity",
                f"Anechoic applies only to cystic or almost completely cystic nodules; this nodule is {label}. "
                "Give the echogenicity of its solid component.",
            )
        if NO_FOCI in foci and len(foci) > 1:
            cleaner.error("echogenic_foci", "'None' cannot be combined with other echogenic foci.")

    diameter = cleaner.number(
        "largest_diameter_mm",
        message=f"Largest diameter must be a number of millimetres, more than 0 and at most {MAX_DIAMETER_MM:g}.",
        exclusive_minimum=True,
    )

    points = category = None
    typed_category = cleaner.choice("tirads_category")
    if features is not None:
        points = sum(_feature_points(*features).values())
        category = tirads_category(points)
        if typed_category is not None and typed_category != category:
            cleaner.error(
                "tirads_category",
                f"{typed_category} was entered but the features add up to "
                f"{_points_phrase(points, features[0])}, which is {category}.",
            )

    cancer_suspected = cleaner.boolean("cancer_suspected")
    tnm: dict[str, str] = {}
    for name, _, _ in _TNM:
        if cancer_suspected is False:
            label = _FIELDS_BY_NAME[name].label.split(" (")[0]
            cleaner.refuse(name, f"Leave the {label} empty: a TNM stage is recorded only when cancer is suspected.")
            tnm[name] = ""
        else:
            value = cleaner.choice(name, required=cancer_suspected is True)
            tnm[name] = "" if value is None else str(value)

    confidence, time_spent_s, note = clean_common(cleaner)
    cleaner.finish()
    assert features is not None and points is not None and category is not None
    assert diameter is not None and cancer_suspected is not None
    assert confidence is not None and time_spent_s is not None
    composition, echogenicity, shape, margin, foci = features
    return ThyroidRead(
        composition=composition,
        echogenicity=echogenicity,
        shape=shape,
        margin=margin,
        echogenic_foci=foci,
        largest_diameter_mm=diameter,
        cancer_suspected=cancer_suspected,
        tnm_t=tnm["tnm_t"],
        tnm_n=tnm["tnm_n"],
        tnm_m=tnm["tnm_m"],
        confidence=confidence,
        time_spent_s=time_spent_s,
        note=note,
        points=points,
        category=category,
        fna=fna_recommendation(category, diameter),
    )


__all__ = [
    "FIELDS",
    "FNA_LABELS",
    "SIZE_THRESHOLDS_MM",
    "TIRADS_LEVELS",
    "FnaRecommendation",
    "ThyroidRead",
    "fna_recommendation",
    "tirads_category",
    "tirads_feature_points",
    "tirads_points",
    "validate_thyroid_read",
]
