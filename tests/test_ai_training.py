"""Training keeps the best epoch as a complete, reproducible checkpoint and
refuses bad data before building anything; evaluation's lesion counting and
empty-mask conventions behave as documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ai_engine import training
from ai_engine.architectures import architecture_config, build_model
from ai_engine.checkpoint import load_checkpoint
from ai_engine.data import DataError, scan_dataset
from ai_engine.evaluation import (
    evaluate,
    image_diagonal,
    lesion_detection,
    predict,
    predict_labels,
    segmentation_scores,
)
from ai_engine.synthetic import write_phantom_3d, write_thyroid_ultrasound_2d
from ai_engine.training import TrainingResult, train
from tests.torch_threads import one_torch_thread

TINY_COMBINED = {"unet_widths": [8, 16, 32], "kite_widths": [8]}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def thyroid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_thyroid_ultrasound_2d(tmp_path_factory.mktemp("data") / "thyroid", count=6, size=32, seed=1)


def run_training(data: Path, out: Path, **overrides: Any) -> tuple[TrainingResult, list[str]]:
    lines: list[str] = []
    settings: dict[str, Any] = {
        "arch": "combined",
        "epochs": 2,
        "image_size": 32,
        "batch_size": 4,
        "options": TINY_COMBINED,
        "progress": False,
        "log": lines.append,
        **overrides,
    }
    return train(data_dir=data, out=out, **settings), lines


def test_it_keeps_the_best_epoch_with_a_complete_description(thyroid: Path, tmp_path: Path) -> None:
    result, lines = run_training(thyroid, tmp_path / "out" / "model.pt")

    checkpoint = load_checkpoint(result.checkpoint, expected_arch="combined")
    assert checkpoint.sha256 == result.sha256
    assert len(result.history) == 2
    best = max(result.history, key=lambda record: record["dice"])
    assert result.best_epoch == best["epoch"]
    assert checkpoint.metrics == result.best_metrics
    assert checkpoint.metrics["dice"] == best["dice"]
    assert 0.0 <= checkpoint.metrics["dice"] <= 1.0 and 0.0 <= checkpoint.metrics["iou"] <= 1.0
    description = checkpoint.training
    assert description["data"] == scan_dataset(thyroid).describe()
    assert description["data"]["synthetic"] is True
    for key, value in {"epochs": 2, "image_size": 32, "seed": 0, "device": "cpu", "batch_size": 4}.items():
        assert description[key] == value
    assert description["steps"] > 0 and description["learning_rate"] == 1e-3
    assert description["optimiser"].startswith("AdamW") and description["loss"].startswith("DiceCELoss")
    assert set(description["versions"]) >= {"torch", "monai"}
    assert description["started_utc"] <= description["finished_utc"]
    assert checkpoint.preprocessing == {
        **checkpoint.preprocessing,
        "image_size": 32,
        "spatial_dims": 2,
        "in_channels": 1,
        "num_classes": 2,
    }
    assert "normalisation" in checkpoint.preprocessing
    assert any(line.startswith("epoch 1/2") and "validation Dice" in line for line in lines)
    assert any(result.sha256 in line for line in lines)


def test_it_trains_the_category_head_when_images_have_categories(thyroid: Path, tmp_path: Path) -> None:
    info = scan_dataset(thyroid)
    assert info.categories  # the synthetic set labels every image
    result, _ = run_training(thyroid, tmp_path / "model.pt", epochs=1)

    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.categories == info.categories
    assert checkpoint.architecture["num_categories"] == len(info.categories)
    assert "category cross-entropy" in checkpoint.training["loss"]
    assert 0.0 <= result.best_metrics["category_accuracy"] <= 1.0


def test_a_baseline_without_category_head_trains_on_segmentation_only(thyroid: Path, tmp_path: Path) -> None:
    result, _ = run_training(thyroid, tmp_path / "model.pt", arch="unet", epochs=1, options=None)
    checkpoint = load_checkpoint(result.checkpoint, expected_arch="unet")
    assert checkpoint.categories == ()
    assert "category_accuracy" not in result.best_metrics
    assert checkpoint.training["loss"] == "DiceCELoss(to_onehot_y, softmax)"


def test_the_same_seed_gives_the_same_weights(thyroid: Path, tmp_path: Path) -> None:
    first, _ = run_training(thyroid, tmp_path / "first.pt", epochs=1, seed=3)
    second, _ = run_training(thyroid, tmp_path / "second.pt", epochs=1, seed=3)
    first_weights = load_checkpoint(first.checkpoint).state_dict
    second_weights = load_checkpoint(second.checkpoint).state_dict
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
    assert first.history[0]["dice"] == second.history[0]["dice"]


@pytest.fixture
def no_model_may_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built before the data were validated")

    monkeypatch.setattr(training, "build_model", refuse)


def test_an_empty_folder_fails_before_any_model_is_built(tmp_path: Path, no_model_may_be_built: None) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "model.pt"
    with pytest.raises(DataError, match="no images found"):
        run_training(tmp_path / "empty", out)
    assert not out.exists()


def test_mismatched_names_fail_before_any_model_is_built(
    thyroid: Path, tmp_path: Path, no_model_may_be_built: None
) -> None:
    broken = write_thyroid_ultrasound_2d(tmp_path / "broken", count=3, size=32)
    mask = sorted((broken / "masks").iterdir())[0]
    mask.rename(mask.with_name("renamed_" + mask.name))
    out = tmp_path / "model.pt"
    with pytest.raises(DataError, match="renamed_"):
        run_training(broken, out)
    assert not out.exists()


def test_it_trains_on_3d_patches_and_validates_by_sliding_window(tmp_path: Path) -> None:
    phantom = write_phantom_3d(tmp_path / "phantom", count=3, size=16, seed=0)
    result, _ = run_training(
        phantom,
        tmp_path / "model3d.pt",
        arch="combined",
        epochs=1,
        image_size=16,
        batch_size=2,
        options={"unet_widths": [4, 8, 16], "kite_widths": [4]},
        validation_fraction=0.34,
    )
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.preprocessing["spatial_dims"] == 3
    assert checkpoint.architecture["spatial_dims"] == 3
    assert checkpoint.training["data"]["layout"] == "3d"
    assert 0.0 <= result.best_metrics["dice"] <= 1.0

    evaluation = evaluate(data_dir=phantom, checkpoint=result.checkpoint)
    assert evaluation["n_images"] == 3 and evaluation["architecture"] == "combined"
    assert 0.0 <= evaluation["dice"] <= 1.0
    assert sum(entry["lesions"] for entry in evaluation["per_image"]) > 0


def test_predictions_come_back_at_the_native_size() -> None:
    torch.manual_seed(0)
    flat = build_model(architecture_config("unet", spatial_dims=2, in_channels=1, out_channels=2))
    logits = predict(flat, torch.rand(2, 1, 40, 30), image_size=32, spatial_dims=2, device=torch.device("cpu"))
    assert logits.shape == (2, 2, 40, 30) and logits.dtype == torch.float32
    labels = predict_labels(
        flat, [torch.rand(1, 40, 30), torch.rand(1, 20, 50)], image_size=32, spatial_dims=2, device=torch.device("cpu")
    )
    assert [label.shape for label in labels] == [(40, 30), (20, 50)]
    volume = build_model(
        architecture_config("unet", spatial_dims=3, in_channels=1, out_channels=2, channels=[4, 8], strides=[2])
    )
    logits = predict(volume, torch.rand(1, 1, 20, 12, 18), image_size=16, spatial_dims=3, device=torch.device("cpu"))
    assert logits.shape == (1, 2, 20, 12, 18)


# --- evaluation's pure functions ------------------------------------------


def square(mask: np.ndarray, top: int, left: int, side: int, value: int = 1) -> None:
    mask[top : top + side, left : left + side] = value


def test_lesion_detection_splits_small_and_large_lesions() -> None:
    truth = np.zeros((64, 64), dtype=np.int64)
    square(truth, 2, 2, 4)  # small, found by a one-pixel touch
    square(truth, 2, 40, 6)  # small, missed
    square(truth, 20, 10, 20)  # large, missed
    square(truth, 50, 50, 12)  # large, found
    predicted = np.zeros_like(truth)
    predicted[5, 5] = 1
    square(predicted, 55, 55, 20)  # overlaps the large lesion and spills past it
    square(predicted, 10, 30, 3)  # a false positive touches nothing

    result = lesion_detection(truth, predicted, small_lesion_px=10)

    assert (result["lesions"], result["lesions_found"]) == (4, 2)
    assert (result["small"], result["small_found"]) == (2, 1)
    assert (result["large"], result["large_found"]) == (2, 1)
    assert sorted(lesion["extent_px"] for lesion in result["per_lesion"]) == [4, 6, 12, 20]


def test_lesion_size_is_the_longest_side_of_its_bounding_box() -> None:
    truth = np.zeros((32, 32), dtype=np.int64)
    truth[5, 2:12] = 1  # a thin line 10 px long, 1 px wide: not small at a 10 px threshold
    truth[20:22, 20:22] = 1
    result = lesion_detection(truth, np.zeros_like(truth), small_lesion_px=10)
    assert (result["small"], result["large"], result["lesions_found"]) == (1, 1, 0)


def test_diagonally_touching_pixels_are_one_lesion() -> None:
    truth = np.eye(8, dtype=np.int64)
    assert lesion_detection(truth, truth, small_lesion_px=10)["lesions"] == 1


def test_an_image_without_lesions_has_none_to_find() -> None:
    empty = np.zeros((16, 16), dtype=np.int64)
    assert lesion_detection(empty, np.ones_like(empty), small_lesion_px=10)["lesions"] == 0


def test_both_masks_empty_is_a_perfect_score() -> None:
    empty = np.zeros((20, 30), dtype=np.int64)
    assert segmentation_scores(empty, empty, num_classes=2) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}


def test_one_mask_empty_scores_zero_and_the_image_diagonal() -> None:
    empty = np.zeros((20, 30), dtype=np.int64)
    lesion = empty.copy()
    square(lesion, 5, 5, 4)
    diagonal = image_diagonal((20, 30))
    assert diagonal == pytest.approx(np.hypot(19, 29))
    for truth, predicted in ((empty, lesion), (lesion, empty)):
        assert segmentation_scores(truth, predicted, num_classes=2) == {"dice": 0.0, "iou": 0.0, "hd95": diagonal}


def test_overlapping_masks_score_as_monai_defines() -> None:
    truth = np.zeros((32, 32), dtype=np.int64)
    predicted = truth.copy()
    square(truth, 4, 4, 10)  # 100 pixels
    square(predicted, 4, 9, 10)  # shifted 5 px: 50 pixels shared
    scores = segmentation_scores(truth, predicted, num_classes=2)
    assert scores["dice"] == pytest.approx(2 * 50 / 200)
    assert scores["iou"] == pytest.approx(50 / 150)
    assert 0 < scores["hd95"] <= 5
