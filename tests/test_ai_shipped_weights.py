"""The checkpoint shipped with the repository: intact, small, documented, and
still as accurate on unseen synthetic frames as its model card says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai_engine.checkpoint import file_sha256, load_checkpoint, side_file_path
from ai_engine.evaluation import evaluate

WEIGHTS = Path(__file__).resolve().parent.parent / "ai_engine" / "weights"
SHIPPED = WEIGHTS / "combined-thyroid-synthetic.pt"


def test_the_shipped_checkpoint_is_intact_small_and_of_the_combined_model() -> None:
    checkpoint = load_checkpoint(SHIPPED, expected_arch="combined")
    assert SHIPPED.stat().st_size <= 10 * 1024 * 1024
    assert checkpoint.sha256 == file_sha256(SHIPPED) == side_file_path(SHIPPED).read_text().split()[0]
    assert checkpoint.training["data"]["synthetic"] is True
    assert checkpoint.categories == ("normal", "low-grade", "high-grade")
    assert checkpoint.preprocessing["image_size"] == 128 and checkpoint.preprocessing["in_channels"] == 1


def test_the_model_card_names_the_shipped_sha256_and_says_it_is_not_for_clinical_use() -> None:
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    assert file_sha256(SHIPPED) in card
    assert "not for clinical use" in card.lower()
    assert "synthetic" in card.lower()


def test_the_shipped_checkpoint_segments_unseen_synthetic_frames(tmp_path: Path) -> None:
    from ai_engine.synthetic import write_thyroid_ultrasound_2d

    # a seed the training set (seed 0) never used
    data = write_thyroid_ultrasound_2d(tmp_path / "unseen", count=16, size=128, seed=4242)
    result = evaluate(data_dir=data, checkpoint=SHIPPED, device="cpu")
    assert result["n_images"] == 16
    assert result["dice"] > 0.7
    assert result["lesion_sensitivity_large"] == pytest.approx(1.0, abs=0.15)
    assert np.isfinite(result["hd95"])
