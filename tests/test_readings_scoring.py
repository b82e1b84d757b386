"""The case report forms' scoring and validation (readings.scoring): ACR
TI-RADS points, levels and FNA thresholds (Tessler et al., J Am Coll Radiol
2017;14:587–595), the Swede score (Strander et al. 2005; Bowring et al. 2010)
with IFCPC 2011 terminology, and every refusal with its message. Pure unit
tests: no database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readings.scoring import (
    COLPOSCOPY_FIELDS,
    NON_FIELD,
    THYROID_FIELDS,
    ReadValidationError,
    fna_recommendation,
    swede_total,
    tirads_category,
    tirads_feature_points,
    tirads_points,
    validate_colposcopy_read,
    validate_thyroid_read,
)
from trial.errors import RuleViolation
from trial.models import FigoStage, ThyroidM, ThyroidN, ThyroidT

# The white paper's chart (Figure 1), written out here independently of the
# module's tables so that a wrong number in either shows up.
CHART = {
    "composition": {
        "cystic": 0,
        "spongiform": 0,
        "mixed_cystic_solid": 1,
        "solid": 2,
        # "assign 2 points if composition cannot be determined because of calcification"
        "indeterminate_calcification": 2,
    },
    "echogenicity": {
        "anechoic": 0,
        "hyperechoic_isoechoic": 1,
        "hypoechoic": 2,
        "very_hypoechoic": 3,
        "indeterminate": 1,  # "assign 1 point if echogenicity cannot be determined"
    },
    "shape": {"wider_than_tall": 0, "taller_than_wide": 3},
    "margin": {
        "smooth": 0,
        "ill_defined": 0,
        "lobulated_irregular": 2,
        "extrathyroidal_extension": 3,
        "indeterminate": 0,  # "assign 0 points if margin cannot be determined"
    },
    "echogenic_foci": {
        "none": 0,
        "large_comet_tail": 0,
        "macrocalcifications": 1,
        "peripheral_calcifications": 2,
        "punctate": 3,
    },
}

# A solid, hyperechoic/isoechoic, wider-than-tall, smooth nodule without foci:
# 2 + 1 + 0 + 0 + 0 = 3 points, TR3.
BASE_FEATURES: dict[str, Any] = {
    "composition": "solid",
    "echogenicity": "hyperechoic_isoechoic",
    "shape": "wider_than_tall",
    "margin": "smooth",
    "echogenic_foci": ["none"],
}


def thyroid_read(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        **BASE_FEATURES,
        "largest_diameter_mm": 18.0,
        "cancer_suspected": False,
        "confidence": 4,
        "time_spent_s": 95,
        "note": "",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not _DROP}


def colposcopy_read(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "adequacy": "adequate",
        "scj_visibility": "completely_visible",
        "transformation_zone": 1,
        "swede_acetowhite": 2,
        "swede_margins_surface": 1,
        "swede_vessels": 1,
        "swede_lesion_size": 2,
        "swede_iodine": 1,
        "impression": "high_grade",
        "biopsy_recommended": True,
        "confidence": 3,
        "time_spent_s": 240,
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not _DROP}


_DROP = object()


def errors_of(validate: Any, data: Any) -> dict[str, str]:
    with pytest.raises(ReadValidationError) as caught:
        validate(data)
    return caught.value.errors


# --- TI-RADS points ------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "code", "points"),
    [(feature, code, points) for feature, table in CHART.items() for code, points in table.items()],
)
def test_every_feature_choice_scores_its_published_points(feature: str, code: str, points: int) -> None:
    # Vary one feature of a nodule whose other features score 0 (a mixed
    # nodule is the neutral base for composition-independent features).
    features: dict[str, Any] = {
        "composition": "mixed_cystic_solid",
        "echogenicity": "hyperechoic_isoechoic",
        "shape": "wider_than_tall",
        "margin": "smooth",
        "echogenic_foci": ["none"],
    }
    features[feature] = [code] if feature == "echogenic_foci" else code
    assert tirads_feature_points(features)[feature] == points


def test_echogenic_foci_points_add_up() -> None:
    features = {**BASE_FEATURES, "echogenic_foci": ["macrocalcifications", "peripheral_calcifications", "punctate"]}
    assert tirads_feature_points(features)["echogenic_foci"] == 1 + 2 + 3
    assert tirads_points(features) == 3 + 6


def test_a_repeated_echogenic_focus_counts_once() -> None:
    features = {**BASE_FEATURES, "echogenic_foci": ["punctate", "punctate"]}
    assert tirads_points(features) == 3 + 3


def test_spongiform_nodule_scores_no_points_for_its_other_features() -> None:
    # Chart note: "Spongiform: ... Do not add further points for other categories."
    features = {
        "composition": "spongiform",
        "echogenicity": "very_hypoechoic",
        "shape": "taller_than_wide",
        "margin": "extrathyroidal_extension",
        "echogenic_foci": ["punctate"],
    }
    assert tirads_feature_points(features) == dict.fromkeys(CHART, 0)
    assert tirads_category(tirads_points(features)) == "TR1"


def test_cystic_nodule_other_features_are_still_scored() -> None:
    # Only spongiform carries the "no further points" note on the chart.
    features = {**BASE_FEATURES, "composition": "cystic", "echogenicity": "anechoic", "echogenic_foci": ["punctate"]}
    assert tirads_points(features) == 3


def test_points_ignore_keys_other_than_the_features() -> None:
    assert tirads_points({**BASE_FEATURES, "largest_diameter_mm": 12, "note": "x"}) == 3


def test_points_refuse_a_missing_or_unknown_feature() -> None:
    with pytest.raises(ReadValidationError) as caught:
        tirads_points({**BASE_FEATURES, "shape": "round", "margin": None})
    assert set(caught.value.errors) == {"shape", "margin"}
    assert caught.value.errors["margin"] == "Margin is required."
    assert caught.value.errors["shape"].startswith("'round' is not an option for Shape. Choose one of: wider_than_tall")


# --- Levels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "level"),
    [(0, "TR1"), (1, "TR2"), (2, "TR2"), (3, "TR3"), (4, "TR4"), (5, "TR4"), (6, "TR4"), (7, "TR5"), (17, "TR5")],
)
def test_points_map_to_the_published_levels(points: int, level: str) -> None:
    assert tirads_category(points) == level


@pytest.mark.parametrize("points", [-1, 2.5, True, "3", None])
def test_level_of_a_points_value_that_is_not_a_count_is_refused(points: Any) -> None:
    with pytest.raises(ValueError, match="TI-RADS points must be a whole number"):
        tirads_category(points)


# --- FNA thresholds ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "diameter_mm", "expected"),
    [
        # TR3: FNA if >= 2.5 cm, follow-up if >= 1.5 cm
        ("TR3", 14.9, "none"),
        ("TR3", 15.0, "follow-up"),
        ("TR3", 15.1, "follow-up"),
        ("TR3", 24.9, "follow-up"),
        ("TR3", 25.0, "fna"),
        ("TR3", 25.1, "fna"),
        # TR4: FNA if >= 1.5 cm, follow-up if >= 1 cm
        ("TR4", 9.9, "none"),
        ("TR4", 10.0, "follow-up"),
        ("TR4", 10.1, "follow-up"),
        ("TR4", 14.9, "follow-up"),
        ("TR4", 15.0, "fna"),
        ("TR4", 15.1, "fna"),
        # TR5: FNA if >= 1 cm, follow-up if >= 0.5 cm
        ("TR5", 4.9, "none"),
        ("TR5", 5.0, "follow-up"),
        ("TR5", 5.1, "follow-up"),
        ("TR5", 9.9, "follow-up"),
        ("TR5", 10.0, "fna"),
        ("TR5", 10.1, "fna"),
        # TR1 and TR2: no FNA at any size
        ("TR1", 0.5, "none"),
        ("TR1", 200.0, "none"),
        ("TR2", 0.5, "none"),
        ("TR2", 200.0, "none"),
    ],
)
def test_fna_thresholds_at_below_and_above_each_boundary(level: str, diameter_mm: float, expected: str) -> None:
    assert fna_recommendation(level, diameter_mm) == expected


def test_fna_refuses_an_unknown_level_or_an_impossible_diameter() -> None:
    with pytest.raises(ValueError, match="'TR6' is not a TI-RADS level"):
        fna_recommendation("TR6", 12)
    for diameter in (0, -3, float("nan"), "wide"):
        with pytest.raises(ValueError, match="largest diameter must be a number of millimetres above 0"):
            fna_recommendation("TR4", diameter)


# --- Worked examples ------------------------------------------------------------------


def test_worked_example_punctate_foci_taller_than_wide_is_tr5() -> None:
    # World J Radiol 2022;14(1):19–29 (doi:10.4329/wjr.v14.i1.19), Figure 1: an 11 mm right
    # mid-pole nodule, solid (2), hypoechoic (2), taller-than-wide (3), smooth
    # (0), punctate echogenic foci (3): 10 points, TR5.
    read = validate_thyroid_read(
        thyroid_read(
            composition="solid",
            echogenicity="hypoechoic",
            shape="taller_than_wide",
            margin="smooth",
            echogenic_foci=["punctate"],
            largest_diameter_mm=11,
        )
    )
    assert (read.points, read.category, read.fna) == (10, "TR5", "fna")


def test_worked_example_one_echogenicity_step_changes_the_level() -> None:
    # Same source, Figure 2: a 21 mm nodule, solid, isoechoic, taller-than-wide,
    # smooth, no foci: 6 points, TR4 for two readers; the third reader called
    # it hypoechoic (+1 point): 7 points, TR5. (The caption prints "isoechoic
    # (+2 points)" but totals 6, which is the chart's 1 point for isoechoic.)
    isoechoic = thyroid_read(
        composition="solid",
        echogenicity="hyperechoic_isoechoic",
        shape="taller_than_wide",
        echogenic_foci=["none"],
        largest_diameter_mm=21,
    )
    assert (validate_thyroid_read(isoechoic).points, validate_thyroid_read(isoechoic).category) == (6, "TR4")
    hypoechoic = validate_thyroid_read({**isoechoic, "echogenicity": "hypoechoic"})
    assert (hypoechoic.points, hypoechoic.category, hypoechoic.fna) == (7, "TR5", "fna")


def test_worked_example_from_the_chart_mixed_isoechoic_nodule_needs_no_fna() -> None:
    # Chart, Figure 1: mixed cystic and solid (1) with an isoechoic solid
    # component (1), wider-than-tall, smooth, no foci: 2 points, TR2, "No FNA"
    # however large.
    read = validate_thyroid_read(
        thyroid_read(composition="mixed_cystic_solid", echogenicity="hyperechoic_isoechoic", largest_diameter_mm=60)
    )
    assert (read.points, read.category, read.fna) == (2, "TR2", "none")


def test_worked_example_from_the_chart_extrathyroidal_extension() -> None:
    # Solid (2), very hypoechoic (3), wider-than-tall, extra-thyroidal extension
    # (3), macrocalcifications (1): 9 points, TR5; 7 mm is below the 10 mm FNA
    # threshold and above the 5 mm follow-up threshold.
    read = validate_thyroid_read(
        thyroid_read(
            echogenicity="very_hypoechoic",
            margin="extrathyroidal_extension",
            echogenic_foci=["macrocalcifications"],
            largest_diameter_mm=7,
        )
    )
    assert (read.points, read.category, read.fna) == (9, "TR5", "follow-up")
    assert read.feature_points() == {
        "composition": 2,
        "echogenicity": 3,
        "shape": 0,
        "margin": 3,
        "echogenic_foci": 1,
    }


# --- Thyroid read validation -----------------------------------------------------


def test_a_valid_thyroid_read_is_cleaned_and_scored() -> None:
    read = validate_thyroid_read(
        thyroid_read(
            echogenic_foci="punctate",
            largest_diameter_mm="16.5",
            cancer_suspected="yes",
            tnm_t="t1b",
            tnm_n="N0a",
            tnm_m="M0",
            tirads_category="TR4",
            confidence="5",
            note="  Left lobe, lower pole.  ",
        )
    )
    assert read.echogenic_foci == ("punctate",)
    assert read.largest_diameter_mm == 16.5
    assert read.cancer_suspected is True
    assert (read.tnm_t, read.tnm_n, read.tnm_m) == ("T1b", "N0a", "M0")
    assert (read.points, read.category, read.fna) == (6, "TR4", "fna")
    assert read.confidence == 5
    assert read.note == "Left lobe, lower pole."
    stored = read.to_dict()
    assert json.loads(json.dumps(stored)) == stored
    assert stored["feature_points"]["echogenic_foci"] == 3


def test_every_missing_required_thyroid_field_is_reported_at_once() -> None:
    errors = errors_of(validate_thyroid_read, {})
    assert errors == {
        "composition": "Composition is required.",
        "echogenicity": "Echogenicity is required.",
        "shape": "Shape is required.",
        "margin": "Margin is required.",
        "echogenic_foci": "Echogenic foci is required.",
        "largest_diameter_mm": "Largest diameter is required.",
        "cancer_suspected": "Cancer suspected is required.",
        "confidence": "Confidence is required.",
        "time_spent_s": "Time spent is required.",
    }


def test_blank_values_count_as_missing() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(composition="  ", echogenic_foci=[], confidence=None))
    assert set(errors) == {"composition", "echogenic_foci", "confidence"}


def test_unknown_choices_name_the_options() -> None:
    errors = errors_of(
        validate_thyroid_read, thyroid_read(echogenicity="grey", echogenic_foci=["punctate", "sparkles", "glitter"])
    )
    assert errors["echogenicity"] == (
        "'grey' is not an option for Echogenicity. Choose one of: anechoic (Anechoic); hyperechoic_isoechoic "
        "(Hyperechoic or isoechoic); hypoechoic (Hypoechoic); very_hypoechoic (Very hypoechoic); "
        "indeterminate (Cannot be determined)."
    )
    assert errors["echogenic_foci"].startswith("'sparkles', 'glitter' are not options for Echogenic foci. Choose from:")


def test_unknown_field_is_refused() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(echogenicty="hypoechoic"))
    assert errors == {"echogenicty": "The thyroid read has no field called 'echogenicty'."}


def test_a_read_that_is_not_a_set_of_fields_is_refused() -> None:
    assert errors_of(validate_thyroid_read, ["solid"]) == {NON_FIELD: "The thyroid read must be a set of named fields."}


@pytest.mark.parametrize("diameter", [0, -4, 200.1, "12 mm", True, float("nan"), float("inf"), [12]])
def test_largest_diameter_must_be_a_positive_number_up_to_200_mm(diameter: Any) -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(largest_diameter_mm=diameter))
    assert errors == {
        "largest_diameter_mm": "Largest diameter must be a number of millimetres, more than 0 and at most 200."
    }


@pytest.mark.parametrize("diameter", [0.1, 200, "200.0", 45])
def test_largest_diameter_limits_themselves_are_accepted(diameter: Any) -> None:
    assert validate_thyroid_read(thyroid_read(largest_diameter_mm=diameter)).largest_diameter_mm == float(diameter)


def test_a_typed_level_that_contradicts_the_points_is_refused() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(tirads_category="TR4"))
    assert errors == {"tirads_category": "TR4 was entered but the features add up to 3 points, which is TR3."}


def test_a_typed_level_on_a_spongiform_nodule_explains_the_zero() -> None:
    errors = errors_of(
        validate_thyroid_read, thyroid_read(composition="spongiform", shape="taller_than_wide", tirads_category="TR3")
    )
    assert errors == {
        "tirads_category": "TR3 was entered but the features add up to 0 points (a spongiform nodule scores no "
        "points for its other features), which is TR1."
    }


def test_a_typed_level_that_matches_is_accepted_in_any_case() -> None:
    assert validate_thyroid_read(thyroid_read(tirads_category="tr3")).category == "TR3"


def test_an_unknown_typed_level_is_refused() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(tirads_category="TR6"))
    assert errors["tirads_category"].startswith(
        "'TR6' is not an option for TI-RADS level. Choose one of: TR1 — Benign; TR2"
    )


def test_anechoic_is_refused_for_a_solid_nodule() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(echogenicity="anechoic"))
    assert errors == {
        "echogenicity": "Anechoic applies only to cystic or almost completely cystic nodules; this nodule is "
        "solid or almost completely solid. Give the echogenicity of its solid component."
    }
    assert validate_thyroid_read(thyroid_read(composition="cystic", echogenicity="anechoic")).points == 0


def test_none_cannot_be_combined_with_other_echogenic_foci() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(echogenic_foci=["none", "punctate"]))
    assert errors == {"echogenic_foci": "'None' cannot be combined with other echogenic foci."}
    read = validate_thyroid_read(thyroid_read(echogenic_foci=["large_comet_tail", "macrocalcifications"]))
    assert read.points == 4


def test_tnm_is_required_when_cancer_is_suspected() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(cancer_suspected=True))
    assert errors == {
        "tnm_t": "T category (AJCC 8th) is required.",
        "tnm_n": "N category (AJCC 8th) is required.",
        "tnm_m": "M category (AJCC 8th) is required.",
    }


def test_tnm_codes_must_be_the_reference_standard_codes() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(cancer_suspected=True, tnm_t="T5", tnm_n="N1a", tnm_m="MX"))
    assert set(errors) == {"tnm_t", "tnm_m"}
    assert errors["tnm_t"].startswith(
        "'T5' is not an option for T category (AJCC 8th). Choose one of: TX; T1a (≤ 1 cm); T1b"
    )
    assert errors["tnm_m"] == "'MX' is not an option for M category (AJCC 8th). Choose one of: M0; M1."


def test_tnm_is_refused_when_cancer_is_not_suspected() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(cancer_suspected="no", tnm_t="T1a", tnm_m="M0"))
    assert errors == {
        "tnm_t": "Leave the T category empty: a TNM stage is recorded only when cancer is suspected.",
        "tnm_m": "Leave the M category empty: a TNM stage is recorded only when cancer is suspected.",
    }
    read = validate_thyroid_read(thyroid_read(cancer_suspected=False, tnm_t=""))
    assert (read.tnm_t, read.tnm_n, read.tnm_m) == ("", "", "")


def test_cancer_suspected_must_be_yes_or_no() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(cancer_suspected="maybe"))
    assert errors == {"cancer_suspected": "Cancer suspected: answer yes or no."}


@pytest.mark.parametrize("confidence", [0, 6, 2.5, "high", True, -1])
def test_confidence_must_be_a_whole_number_from_1_to_5(confidence: Any) -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(confidence=confidence))
    assert errors == {"confidence": "Confidence must be a whole number from 1 (not at all sure) to 5 (certain)."}


@pytest.mark.parametrize("seconds", [0, -10, 14401, 12.5, "two minutes", False])
def test_time_spent_must_be_positive_whole_seconds_up_to_4_hours(seconds: Any) -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(time_spent_s=seconds))
    assert errors == {
        "time_spent_s": "Time spent must be a whole number of seconds, at least 1 and at most 14400 (4 hours)."
    }


@pytest.mark.parametrize(("confidence", "seconds"), [(1, 1), (5, 14400), ("2", "600"), (3.0, 60.0)])
def test_confidence_and_time_limits_are_accepted(confidence: Any, seconds: Any) -> None:
    read = validate_thyroid_read(thyroid_read(confidence=confidence, time_spent_s=seconds))
    assert (read.confidence, read.time_spent_s) == (int(confidence), int(seconds))


def test_note_longer_than_4000_characters_is_refused() -> None:
    errors = errors_of(validate_thyroid_read, thyroid_read(note="x" * 4001))
    assert errors == {"note": "Note is 4001 characters long; the limit is 4000 characters."}
    assert len(validate_thyroid_read(thyroid_read(note="x" * 4000)).note) == 4000


def test_note_must_be_text() -> None:
    assert errors_of(validate_thyroid_read, thyroid_read(note=12)) == {"note": "Note must be text."}


def test_several_thyroid_errors_are_reported_together() -> None:
    with pytest.raises(ReadValidationError) as caught:
        validate_thyroid_read(
            thyroid_read(
                margin="jagged",
                largest_diameter_mm=0,
                tirads_category="TR5",
                cancer_suspected=False,
                tnm_n="N1b",
                confidence=9,
                time_spent_s=_DROP,
                note="y" * 5000,
            )
        )
    error = caught.value
    assert list(error.errors) == ["margin", "largest_diameter_mm", "tnm_n", "confidence", "time_spent_s", "note"]
    # The typed level cannot be checked while a feature is unknown; it is not
    # reported as a contradiction of a score that does not exist.
    assert "tirads_category" not in error.errors
    assert isinstance(error, RuleViolation) and error.field is None
    assert "margin: 'jagged' is not an option for Margin" in error.message


def test_a_single_error_names_its_field_for_the_api() -> None:
    with pytest.raises(ReadValidationError) as caught:
        validate_thyroid_read(thyroid_read(confidence=0))
    assert caught.value.field == "confidence"


# --- Swede score -----------------------------------------------------------------

SWEDE_DESCRIPTORS = {
    "swede_acetowhite": ("zero or transparent", "shady, milky", "distinct, opaque white"),
    "swede_margins_surface": ("zero or diffuse", "sharp but irregular, jagged", "sharp and even"),
    "swede_vessels": ("fine, regular", "absent", "coarse or atypical"),
    "swede_lesion_size": ("< 5 mm", "5–15 mm or 2 quadrants", "> 15 mm, or 3–4 quadrants, or endocervically undefined"),
    "swede_iodine": ("brown", "faintly or patchy yellow", "distinct yellow"),
}


@pytest.mark.parametrize("item", list(SWEDE_DESCRIPTORS))
def test_swede_items_carry_the_published_descriptors(item: str) -> None:
    spec = next(spec for spec in COLPOSCOPY_FIELDS if spec.name == item)
    assert [choice.value for choice in spec.choices] == [0, 1, 2]
    assert [choice.points for choice in spec.choices] == [0, 1, 2]
    for choice, descriptor in zip(spec.choices, SWEDE_DESCRIPTORS[item], strict=True):
        assert choice.label.lower().startswith(descriptor)


@pytest.mark.parametrize(
    ("scores", "total"),
    [((0, 0, 0, 0, 0), 0), ((2, 2, 2, 2, 2), 10), ((2, 1, 2, 0, 1), 6), ((1, 1, 1, 1, 1), 5), ((0, 0, 2, 0, 0), 2)],
)
def test_swede_total_is_the_sum_of_the_five_items(scores: tuple[int, ...], total: int) -> None:
    assert swede_total(dict(zip(SWEDE_DESCRIPTORS, scores, strict=True))) == total


def test_swede_total_refuses_items_outside_0_to_2() -> None:
    items: dict[str, Any] = dict.fromkeys(SWEDE_DESCRIPTORS, 1)
    items["swede_vessels"] = 3
    del items["swede_iodine"]
    with pytest.raises(ReadValidationError) as caught:
        swede_total(items)
    assert caught.value.errors == {
        "swede_vessels": "'3' is not an option for Vessels. Choose one of: 0 (Fine, regular); 1 (Absent); "
        "2 (Coarse or atypical).",
        "swede_iodine": "Iodine staining is required.",
    }


# --- Colposcopy read validation ---------------------------------------------------


def test_a_valid_colposcopy_read_is_cleaned_and_totalled() -> None:
    read = validate_colposcopy_read(colposcopy_read(swede_total="7", swede_iodine="1", biopsy_recommended="yes"))
    assert read.swede_total == 7
    assert read.swede_iodine == 1
    assert read.biopsy_recommended is True
    assert (read.inadequacy_reason, read.figo_stage, read.note) == ("", "", "")
    stored = read.to_dict()
    assert json.loads(json.dumps(stored)) == stored
    assert stored["transformation_zone"] == 1


def test_every_missing_required_colposcopy_field_is_reported_at_once() -> None:
    errors = errors_of(validate_colposcopy_read, {})
    assert errors == {
        "adequacy": "Adequacy is required.",
        "scj_visibility": "Squamocolumnar junction visibility is required.",
        "transformation_zone": "Transformation zone type is required.",
        "swede_acetowhite": "Aceto uptake is required.",
        "swede_margins_surface": "Margins and surface is required.",
        "swede_vessels": "Vessels is required.",
        "swede_lesion_size": "Lesion size is required.",
        "swede_iodine": "Iodine staining is required.",
        "impression": "Colposcopic impression is required.",
        "biopsy_recommended": "Biopsy recommended is required.",
        "confidence": "Confidence is required.",
        "time_spent_s": "Time spent is required.",
    }


def test_a_typed_swede_total_that_contradicts_the_items_is_refused() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(swede_total=8))
    assert errors == {"swede_total": "A Swede score of 8 was entered but the five items add up to 7."}


@pytest.mark.parametrize("total", [11, -1, 6.5, "high"])
def test_a_typed_swede_total_outside_0_to_10_is_refused(total: Any) -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(swede_total=total))
    assert errors == {"swede_total": "The Swede score must be a whole number from 0 to 10."}


def test_an_inadequate_examination_needs_a_reason() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(adequacy="inadequate"))
    assert errors == {"inadequacy_reason": "Reason the examination is inadequate is required."}
    read = validate_colposcopy_read(colposcopy_read(adequacy="inadequate", inadequacy_reason="bleeding"))
    assert read.inadequacy_reason == "bleeding"


def test_an_adequate_examination_takes_no_reason() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(inadequacy_reason="scar"))
    assert errors == {"inadequacy_reason": "Leave the reason empty: the examination was recorded as adequate."}


def test_the_reason_other_must_be_described_in_the_note() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(adequacy="inadequate", inadequacy_reason="other"))
    assert errors == {"note": "Describe in the note why the examination was inadequate (the reason given is 'Other')."}
    read = validate_colposcopy_read(
        colposcopy_read(adequacy="inadequate", inadequacy_reason="other", note="Patient could not tolerate speculum.")
    )
    assert read.note == "Patient could not tolerate speculum."


def test_transformation_zone_type_3_contradicts_a_fully_visible_junction() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(transformation_zone=3))
    assert errors == {
        "transformation_zone": "Transformation zone type 3 means the squamocolumnar junction is not fully "
        "visible, but the junction was recorded as completely visible."
    }


@pytest.mark.parametrize(("zone", "visibility"), [(1, "partially_visible"), ("2", "not_visible")])
def test_transformation_zone_types_1_and_2_need_a_fully_visible_junction(zone: Any, visibility: str) -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(transformation_zone=zone, scj_visibility=visibility))
    assert errors == {
        "transformation_zone": f"Transformation zone type {int(zone)} means the squamocolumnar junction is fully "
        f"visible, but the junction was recorded as {visibility.replace('_', ' ')}."
    }


@pytest.mark.parametrize("visibility", ["partially_visible", "not_visible"])
def test_transformation_zone_type_3_with_a_hidden_junction_is_accepted(visibility: str) -> None:
    read = validate_colposcopy_read(colposcopy_read(transformation_zone="3", scj_visibility=visibility))
    assert (read.transformation_zone, read.scj_visibility) == (3, visibility)


def test_figo_stage_is_required_when_invasion_is_suspected() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(impression="suspicious_invasion"))
    assert errors == {"figo_stage": "FIGO stage (2018) is required."}
    read = validate_colposcopy_read(colposcopy_read(impression="suspicious_invasion", figo_stage="ib2"))
    assert read.figo_stage == "IB2"


def test_figo_stage_must_be_a_figo_2018_code() -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(impression="suspicious_invasion", figo_stage="IB"))
    assert errors["figo_stage"].startswith("'IB' is not an option for FIGO stage (2018). Choose one of: IA1; IA2; IB1")


@pytest.mark.parametrize("impression", ["normal", "low_grade", "high_grade"])
def test_figo_stage_is_refused_unless_invasion_is_suspected(impression: str) -> None:
    errors = errors_of(validate_colposcopy_read, colposcopy_read(impression=impression, figo_stage="IA1"))
    assert errors == {
        "figo_stage": "Leave the FIGO stage empty: it is recorded only when the impression is suspicious for invasion."
    }


def test_several_colposcopy_errors_are_reported_together() -> None:
    errors = errors_of(
        validate_colposcopy_read,
        colposcopy_read(
            adequacy="inadequate",
            transformation_zone=4,
            swede_vessels=5,
            swede_total=3,
            impression="normal",
            figo_stage="IVB",
            biopsy_recommended="perhaps",
            confidence=0,
            note=7,
        ),
    )
    assert errors == {
        "inadequacy_reason": "Reason the examination is inadequate is required.",
        "transformation_zone": "'4' is not an option for Transformation zone type. Choose one of: 1 (Type 1 — "
        "completely ectocervical, fully visible); 2 (Type 2 — has an endocervical component, fully visible); "
        "3 (Type 3 — has an endocervical component, not fully visible).",
        "swede_vessels": "'5' is not an option for Vessels. Choose one of: 0 (Fine, regular); 1 (Absent); "
        "2 (Coarse or atypical).",
        "biopsy_recommended": "Biopsy recommended: answer yes or no.",
        "figo_stage": "Leave the FIGO stage empty: it is recorded only when the impression is suspicious for invasion.",
        "confidence": "Confidence must be a whole number from 1 (not at all sure) to 5 (certain).",
        "note": "Note must be text.",
    }


# --- Field descriptions -----------------------------------------------------------


@pytest.mark.parametrize("fields", [THYROID_FIELDS, COLPOSCOPY_FIELDS], ids=["thyroid", "colposcopy"])
def test_field_descriptions_render_to_json(fields: Any) -> None:
    names = [spec.name for spec in fields]
    assert len(names) == len(set(names))
    described = json.loads(json.dumps([spec.to_dict() for spec in fields]))
    for entry in described:
        assert entry["label"]
        if entry["kind"] in ("choice", "multiple_choice"):
            assert entry["choices"], entry["name"]
        if "required_if" in entry:
            assert entry["required_if"]["field"] in names
            assert entry["required"] is False


def test_stage_choices_are_the_reference_standard_vocabularies() -> None:
    by_name = {spec.name: spec for spec in (*THYROID_FIELDS, *COLPOSCOPY_FIELDS)}
    assert [choice.value for choice in by_name["tnm_t"].choices] == list(ThyroidT.values)
    assert [choice.value for choice in by_name["tnm_n"].choices] == list(ThyroidN.values)
    assert [choice.value for choice in by_name["tnm_m"].choices] == list(ThyroidM.values)
    assert [choice.value for choice in by_name["figo_stage"].choices] == list(FigoStage.values)


def test_feature_choices_show_their_points() -> None:
    by_name = {spec.name: spec for spec in THYROID_FIELDS}
    for feature, table in CHART.items():
        assert {choice.value: choice.points for choice in by_name[feature].choices} == table


def test_scoring_imports_and_runs_without_django_settings() -> None:
    script = (
        "import sys\n"
        "import readings.scoring as s\n"
        "assert 'trial.models' not in sys.modules and 'django.conf' not in sys.modules\n"
        "print(s.tirads_points({'composition': 'solid', 'echogenicity': 'hypoechoic',"
        " 'shape': 'wider_than_tall', 'margin': 'smooth', 'echogenic_foci': ['punctate']}))\n"
        "print(s.swede_total({'swede_acetowhite': 2, 'swede_margins_surface': 2, 'swede_vessels': 1,"
        " 'swede_lesion_size': 0, 'swede_iodine': 1}))\n"
        "print(len(s.THYROID_FIELDS[0].choices))\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7", "6", "5"]


# --- Properties -------------------------------------------------------------------

_single = {feature: st.sampled_from(sorted(table)) for feature, table in CHART.items() if feature != "echogenic_foci"}
_foci = st.sets(st.sampled_from(sorted(CHART["echogenic_foci"])), min_size=1)


@given(
    composition=_single["composition"],
    echogenicity=_single["echogenicity"],
    shape=_single["shape"],
    margin=_single["margin"],
    foci=_foci,
)
def test_points_are_the_sum_of_the_chosen_features_points(
    composition: str, echogenicity: str, shape: str, margin: str, foci: set[str]
) -> None:
    features = {
        "composition": composition,
        "echogenicity": echogenicity,
        "shape": shape,
        "margin": margin,
        "echogenic_foci": sorted(foci),
    }
    expected = (
        0
        if composition == "spongiform"
        else CHART["composition"][composition]
        + CHART["echogenicity"][echogenicity]
        + CHART["shape"][shape]
        + CHART["margin"][margin]
        + sum(CHART["echogenic_foci"][focus] for focus in foci)
    )
    assert tirads_points(features) == expected


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=40))
def test_level_never_falls_as_points_rise(low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    assert int(tirads_category(low)[2]) <= int(tirads_category(high)[2])


_STRENGTH = {"none": 0, "follow-up": 1, "fna": 2}


@given(
    st.sampled_from(["TR1", "TR2", "TR3", "TR4", "TR5"]),
    st.floats(min_value=0.1, max_value=200),
    st.floats(min_value=0.1, max_value=200),
)
def test_recommendation_never_weakens_as_the_nodule_grows(level: str, first: float, second: float) -> None:
    small, large = min(first, second), max(first, second)
    assert _STRENGTH[fna_recommendation(level, small)] <= _STRENGTH[fna_recommendation(level, large)]


@given(st.lists(st.integers(min_value=0, max_value=2), min_size=5, max_size=5))
def test_swede_total_equals_the_items_sum(scores: list[int]) -> None:
    items = dict(zip(SWEDE_DESCRIPTORS, scores, strict=True))
    assert swede_total(items) == sum(scores)
    read = validate_colposcopy_read(colposcopy_read(**items, swede_total=sum(scores)))
    assert read.swede_total == sum(scores)
