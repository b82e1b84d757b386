"""The checkpoints shipped with the repository: intact, small, documented, and
still as accurate on unseen synthetic images as their model cards say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ai_engine.checkpoint import file_sha256, load_checkpoint, side_file_path
from ai_engine.evaluation import evaluate
from ai_engine.synthetic import write_colposcopy_2d, write_thyroid_ultrasound_2d

WEIGHTS = Path(__file__).resolve().parent.parent / "ai_engine" / "weights"
# name -> (input channels, the generator of its kind of synthetic images)
SHIPPED: dict[str, tuple[int, Callable[..., Path]]] = {
    "combined-thyroid-synthetic": (1, write_thyroid_ultrasound_2d),
    "combined-colposcopy-synthetic": (3, write_colposcopy_2d),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_checkpoint_is_intact_small_and_of_the_combined_model(name: str) -> None:
    path = WEIGHTS / f"{name}.pt"
    checkpoint = load_checkpoint(path, expected_arch="combined")
    assert path.stat().st_size <= 10 * 1024 * 1024
    assert checkpoint.sha256 == file_sha256(path) == side_file_path(path).read_text().split()[0]
    assert checkpoint.training["data"]["synthetic"] is True
    assert checkpoint.categories == ("normal", "low-grade", "high-grade")
    assert checkpoint.preprocessing["image_size"] == 128
    assert checkpoint.preprocessing["in_channels"] == SHIPPED[name][0]


@pytest.mark.parametrize("name", SHIPPED)
def test_its_model_card_names_its_sha256_and_says_it_is_not_for_clinical_use(name: str) -> None:
    card = (WEIGHTS / f"{name}.md").read_text()
    assert file_sha256(WEIGHTS / f"{name}.pt") in card
    assert "not for clinical use" in card.lower()
    assert "synthetic" in card.lower()


@pytest.mark.parametrize("name", SHIPPED)
def test_it_segments_unseen_synthetic_images(name: str, tmp_path: Path) -> None:
    # a seed the training set (seed 0) never used
    data = SHIPPED[name][1](tmp_path / "unseen", count=16, size=128, seed=4242)
    result = evaluate(data_dir=data, checkpoint=WEIGHTS / f"{name}.pt", device="cpu")
    assert result["n_images"] == 16
    assert result["dice"] > 0.7
    assert result["lesion_sensitivity_large"] == pytest.approx(1.0, abs=0.15)
    assert np.isfinite(result["hd95"])
