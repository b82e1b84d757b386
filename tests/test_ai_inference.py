"""The inference engine as a plain module: quality gate, pre-processing,
micro-batching, post-processing and measurements, with the shipped
checkpoint on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from ai_engine.inference import (
    BLANK,
    BLURRED,
    CHANNEL_MISMATCH,
    NOT_FINITE,
    TOO_SMALL,
    UNSUPPORTED_LAYOUT,
    WRONG_MODALITY,
    InferenceEngine,
    InferenceError,
    InferenceInput,
    InferenceResult,
    check_quality,
    lesion_mask,
    measure_lesions,
)
from ai_engine.inference.measurements import lesion_probability
from ai_engine.inference.quality import assess
from ai_engine.synthetic import CATEGORIES, Frame, colposcopy_frame, thyroid_frame
from tests.torch_threads import one_torch_thread

CHECKPOINT = Path(__file__).resolve().parent.parent / "ai_engine" / "weights" / "combined-thyroid-synthetic.pt"
SIZE = 128
SPACING = (0.1, 0.2)


@pytest.fixture(scope="module")
def engine() -> Iterator[InferenceEngine]:
    torch.manual_seed(0)
    with one_torch_thread():
        yield InferenceEngine(CHECKPOINT, device="cpu", max_batch=4)


@pytest.fixture(scope="module")
def nodule_frame() -> Frame:
    frame = thyroid_frame(np.random.default_rng(3), SIZE)
    assert frame.category == "high-grade" and frame.mask.sum() > 400  # a large nodule
    return frame


@pytest.fixture(scope="module")
def nodule_result(engine: InferenceEngine, nodule_frame: Frame) -> InferenceResult:
    [result] = engine.run([InferenceInput("nodule", nodule_frame.image, "ultrasound", SPACING)])
    return result


def ultrasound(pixels: np.ndarray, name: str = "frame") -> InferenceInput:
    return InferenceInput(name, pixels, "ultrasound")


def dice(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first.astype(bool), second.astype(bool)
    return float(2 * (first & second).sum() / (first.sum() + second.sum()))


def test_it_finds_a_large_nodule(nodule_result: InferenceResult, nodule_frame: Frame) -> None:
    assert nodule_result.status == "done" and nodule_result.reason == ""
    assert nodule_result.mask is not None and nodule_result.probability is not None
    assert nodule_result.mask.dtype == np.uint8 and nodule_result.mask.shape == (SIZE, SIZE)
    assert set(np.unique(nodule_result.mask)) <= {0, 1}
    assert nodule_result.probability.dtype == np.float16
    assert dice(nodule_result.mask, nodule_frame.mask) > 0.6
    assert nodule_result.frame_index == 0
    assert nodule_result.model_sha256 == CHECKPOINT.with_name(CHECKPOINT.name + ".sha256").read_text().split()[0]
    assert nodule_result.device == "cpu" and nodule_result.runtime_ms > 0


def test_it_measures_lesions_in_millimetres_with_spacing(nodule_result: InferenceResult) -> None:
    measurements = nodule_result.measurements
    assert measurements["lesion_count"] >= 1
    for lesion in measurements["lesions"]:
        assert lesion["area_mm2"] == pytest.approx(lesion["area_px"] * SPACING[0] * SPACING[1])
        assert lesion["largest_diameter_mm"] is not None
        assert lesion["largest_diameter_mm"] >= lesion["largest_diameter_px"] * min(SPACING) - 1e-9
    assert measurements["total_area_px"] == int(nodule_result.mask.sum())  # type: ignore[union-attr]
    assert measurements["total_area_mm2"] == pytest.approx(measurements["total_area_px"] * SPACING[0] * SPACING[1])


def test_it_gives_no_millimetres_without_spacing(engine: InferenceEngine, nodule_frame: Frame) -> None:
    [result] = engine.run([ultrasound(nodule_frame.image)])
    assert result.measurements["lesion_count"] >= 1
    assert result.measurements["total_area_mm2"] is None
    assert all(lesion["area_mm2"] is None for lesion in result.measurements["lesions"])
    assert all(lesion["largest_diameter_mm"] is None for lesion in result.measurements["lesions"])


def test_it_suggests_a_category_with_probabilities_summing_to_one(nodule_result: InferenceResult) -> None:
    probabilities = nodule_result.category_probabilities
    assert tuple(probabilities) == CATEGORIES
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert nodule_result.category == max(probabilities, key=lambda name: probabilities[name])
    assert nodule_result.category_probability == probabilities[nodule_result.category]


def test_it_measures_the_diameter_of_a_disc() -> None:
    rows, columns = np.mgrid[0:64, 0:64]
    disc = ((rows - 30) ** 2 + (columns - 33) ** 2 <= 10**2).astype(np.uint8)
    measured = measure_lesions(disc, pixel_spacing_mm=(0.1, 0.1))
    [lesion] = measured["lesions"]
    assert lesion["largest_diameter_px"] == pytest.approx(20.0, abs=0.01)
    assert lesion["largest_diameter_mm"] == pytest.approx(2.0, abs=0.01)
    assert lesion["area_px"] == int(disc.sum())
    assert lesion["area_mm2"] == pytest.approx(disc.sum() * 0.01)
    assert lesion["centroid"] == pytest.approx((30.0, 33.0))
    # Anisotropic pixels: the columns are twice as wide, so the disc is 4 mm across from side to side.
    assert measure_lesions(disc, pixel_spacing_mm=(0.1, 0.2))["lesions"][0]["largest_diameter_mm"] == pytest.approx(4.0)


def test_it_measures_a_straight_line_lesion() -> None:
    line = np.zeros((40, 40), dtype=np.uint8)
    line[5, 3:33] = 1  # all pixels on one line: no two-dimensional hull
    [lesion] = measure_lesions(line)["lesions"]
    assert lesion["largest_diameter_px"] == pytest.approx(29.0)


def test_it_removes_components_smaller_than_the_minimum() -> None:
    probability = np.zeros((32, 32), dtype=np.float32)
    probability[4:7, 4:7] = 0.9  # 9 px: kept
    probability[20, 20:22] = 0.9  # 2 px: speckle, removed
    probability[10, 25] = 0.4  # below the threshold
    mask = lesion_mask(probability, threshold=0.5, min_component_px=4)
    assert int(mask.sum()) == 9 and mask[4:7, 4:7].all()
    assert measure_lesions(mask)["lesion_count"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [96, 256])
def test_good_synthetic_frames_pass_the_gate(seed: int, size: int) -> None:
    frame = thyroid_frame(np.random.default_rng(seed), size)
    verdict = check_quality(ultrasound(frame.image), expected_modality="ultrasound")
    assert verdict.ok, verdict.reason
    assert verdict.reason == "" and verdict.figures["contrast"] > 0.02


def test_a_colposcopy_photograph_passes_the_gate_of_a_photo_model() -> None:
    frame = colposcopy_frame(np.random.default_rng(0), SIZE)
    assert check_quality(InferenceInput("photo", frame.image, "photo"), expected_modality="photo").ok


def degraded(kind: str, frame: Frame) -> InferenceInput:
    image = frame.image
    if kind == BLANK:
        noise = np.random.default_rng(0).integers(0, 3, image.shape)
        return ultrasound((np.full(image.shape, 120) + noise).astype(np.uint8))
    if kind == BLURRED:
        return ultrasound(ndimage.gaussian_filter(image, sigma=6))
    if kind == TOO_SMALL:
        return ultrasound(image[40:80, 40:80])
    if kind == WRONG_MODALITY:
        return InferenceInput("photo", colposcopy_frame(np.random.default_rng(0), SIZE).image, "photo")
    if kind == NOT_FINITE:
        pixels = image.astype(np.float32) / 255
        pixels[10:20, 10:20] = np.nan
        return ultrasound(pixels)
    if kind == UNSUPPORTED_LAYOUT:
        return ultrasound(np.zeros((2, 64, 64, 4), dtype=np.uint8))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [BLANK, BLURRED, TOO_SMALL, WRONG_MODALITY, NOT_FINITE, UNSUPPORTED_LAYOUT])
def test_each_quality_failure_abstains_with_its_reason(engine: InferenceEngine, nodule_frame: Frame, kind: str) -> None:
    [result] = engine.run([degraded(kind, nodule_frame)])
    assert result.status == "abstained"
    assert result.reason.startswith(f"{kind}: ") and len(result.reason) > len(kind) + 10
    assert result.quality.ok is False and result.quality.code == kind
    assert result.mask is None and result.probability is None
    assert result.measurements == {} and result.category is None and result.category_probabilities == {}
    assert result.model_sha256 == engine.sha256


def test_the_blur_and_blank_verdicts_carry_their_figures(nodule_frame: Frame) -> None:
    blurred = check_quality(degraded(BLURRED, nodule_frame), expected_modality="ultrasound")
    sharp = check_quality(ultrasound(nodule_frame.image), expected_modality="ultrasound")
    assert blurred.figures["sharpness"] < sharp.figures["sharpness"] / 100
    blank = check_quality(degraded(BLANK, nodule_frame), expected_modality="ultrasound")
    assert blank.figures["contrast"] < 0.02


def test_a_grey_picture_is_refused_by_a_colour_model(nodule_frame: Frame) -> None:
    verdict = check_quality(InferenceInput("grey", nodule_frame.image, "photo"), expected_modality="photo")
    assert verdict.code == CHANNEL_MISMATCH


def test_a_cine_loop_is_judged_on_its_sharpest_frame(engine: InferenceEngine, nodule_frame: Frame) -> None:
    blurred = ndimage.gaussian_filter(nodule_frame.image, sigma=3)
    loop = np.stack([blurred, blurred, blurred, nodule_frame.image, blurred])
    [result] = engine.run([ultrasound(loop, "cine")])
    assert result.status == "done" and result.frame_index == 3
    assert result.mask is not None and result.mask.shape == (SIZE, SIZE)
    assert dice(result.mask, nodule_frame.mask) > 0.6
    middle = check_quality(ultrasound(loop), expected_modality="ultrasound", key_frame="middle")
    assert middle.code == BLURRED and middle.figures["frame_index"] == 2


def test_micro_batches_give_the_same_answers_as_single_runs(engine: InferenceEngine) -> None:
    frames = [thyroid_frame(np.random.default_rng(100 + index), 96 + 16 * (index % 3)).image for index in range(8)]
    inputs = [ultrasound(image, f"frame {index}") for index, image in enumerate(frames)]
    inputs.insert(2, ultrasound(np.zeros((SIZE, SIZE), dtype=np.uint8), "blank"))
    inputs.insert(7, ultrasound(frames[0][:40, :40], "tiny"))
    batch_sizes: list[int] = []
    forward = engine._forward

    def counting_forward(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_sizes.append(images.shape[0])
        return forward(images)

    engine._forward = counting_forward  # type: ignore[method-assign]
    try:
        together = engine.run(inputs)
    finally:
        del engine._forward  # back to the class's method
    assert batch_sizes == [4, 4]
    alone = [engine.run([item])[0] for item in inputs]
    assert len(together) == len(inputs) == 10
    assert [result.status for result in together] == ["done"] * 2 + ["abstained"] + ["done"] * 4 + ["abstained"] + [
        "done"
    ] * 2
    for item, batched, single in zip(inputs, together, alone, strict=True):
        assert batched.status == single.status and batched.reason == single.reason
        if batched.status == "done":
            assert batched.mask is not None and batched.probability is not None and single.probability is not None
            assert batched.mask.shape == item.pixels.shape
            np.testing.assert_allclose(batched.probability, single.probability, atol=2e-3)
            assert (batched.mask != single.mask).mean() < 0.001
            assert batched.category == single.category


def test_16_bit_pixels_are_scaled_by_their_full_range(engine: InferenceEngine, nodule_frame: Frame) -> None:
    sixteen_bit = nodule_frame.image.astype(np.uint16) * 257  # 255 -> 65535
    as_float = nodule_frame.image.astype(np.float32) / 255
    as_colour = np.repeat(nodule_frame.image[..., None], 3, axis=-1)  # RGB-encoded ultrasound becomes grey
    eight_bit, sixteen, floating, colour = engine.run(
        [ultrasound(nodule_frame.image), ultrasound(sixteen_bit), ultrasound(as_float), ultrasound(as_colour)]
    )
    for other in (sixteen, floating, colour):
        assert other.status == "done" and other.probability is not None and eight_bit.probability is not None
        np.testing.assert_allclose(other.probability, eight_bit.probability, atol=2e-3)
    # 8-bit values stored in a 16-bit array without rescaling are nearly black at the 16-bit range.
    [dark] = engine.run([ultrasound(nodule_frame.image.astype(np.uint16))])
    assert dark.status == "abstained" and dark.quality.code == BLANK


def test_bad_settings_and_inputs_are_refused_with_clear_errors() -> None:
    with pytest.raises(InferenceError, match="threshold"):
        InferenceEngine(CHECKPOINT, device="cpu", threshold=1.5)
    with pytest.raises(InferenceError, match="modality"):
        InferenceInput("x", np.zeros((64, 64)), "x-ray")
    with pytest.raises(InferenceError, match="spacing"):
        InferenceInput("x", np.zeros((64, 64)), "ultrasound", (0.1, -1.0))


def test_sliding_windows_judge_a_large_frame_at_native_resolution(engine: InferenceEngine) -> None:
    frame = thyroid_frame(np.random.default_rng(5), 300).image
    image = np.concatenate([frame, frame[:, :120]], axis=1)  # 300 × 420, larger than the 128 px network
    with one_torch_thread():
        windows = InferenceEngine(CHECKPOINT, device="cpu", max_batch=4, inference_mode="sliding_window")
        [result] = windows.run([ultrasound(image)])
        assert result.status == "done" and result.mask is not None and result.probability is not None
        assert result.mask.shape == result.probability.shape == image.shape
        # Exactly MONAI's sliding window over the engine's pre-processed frame.
        _, prepared = assess(ultrasound(image), expected_modality="ultrasound")
        assert prepared is not None
        with torch.inference_mode():
            logits = sliding_window_inference(
                prepared.image[None], roi_size=(SIZE, SIZE), sw_batch_size=4, predictor=windows._model, mode="gaussian"
            )
        assert isinstance(logits, torch.Tensor)
        np.testing.assert_allclose(result.probability, lesion_probability(logits[0]), atol=2e-3)
        # The resize path judges the same frame differently (at 128 px).
        [resized] = engine.run([ultrasound(image)])
        assert resized.probability is not None
        assert np.abs(resized.probability.astype(np.float32) - result.probability.astype(np.float32)).max() > 0.05
        # The category still comes from the whole frame.
        assert result.category == resized.category


def test_the_inference_mode_and_window_overlap_are_checked() -> None:
    with pytest.raises(InferenceError, match="Unknown inference mode 'tiles'"):
        InferenceEngine(CHECKPOINT, device="cpu", inference_mode="tiles")
    with pytest.raises(InferenceError, match="window overlap"):
        InferenceEngine(CHECKPOINT, device="cpu", inference_mode="sliding_window", window_overlap=1.0)
