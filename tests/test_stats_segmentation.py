"""analysis.stats.segmentation on hand-computed masks: squares and cubes shifted by k pixels
(Dice and IoU as exact fractions), HD95 worked out by hand with anisotropic spacing (the
percentile, not the maximum), agreement with MONAI's compute_hausdorff_distance on random
2D and 3D masks, empty masks, and bad input."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from analysis.stats.core import StatsInputError
from analysis.stats.segmentation import dice, hd95, iou


def _square(shift: int = 0, shape: tuple[int, int] = (30, 40)) -> np.ndarray:
    """A 10 × 10 square at rows 10–19, columns 10+shift … 19+shift."""
    mask = np.zeros(shape, dtype=bool)
    mask[10:20, 10 + shift : 20 + shift] = True
    return mask


# --- Dice and IoU ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0, 1, 3, 5, 9, 10, 12])
def test_shifted_squares_give_exact_fractions(shift: int) -> None:
    # Two 10 × 10 squares overlapping in a 10 × (10 − k) strip (none once k ≥ 10):
    # Dice = 2·10(10 − k) / 200 = (10 − k)/10, IoU = 10(10 − k) / (10(10 + k)) = (10 − k)/(10 + k).
    overlap = max(10 - shift, 0)
    a, b = _square(), _square(shift)
    assert dice(a, b) == pytest.approx(overlap / 10, abs=1e-15)
    assert iou(a, b) == pytest.approx(overlap / (10 + min(shift, 10)), abs=1e-15)


def test_three_pixel_shift_worked_out() -> None:
    # |A| = |B| = 100, |A ∩ B| = 70, |A ∪ B| = 130: Dice 140/200 = 0.7, IoU 70/130 = 7/13.
    a, b = _square(), _square(3)
    assert dice(a, b) == pytest.approx(0.7, abs=1e-15)
    assert iou(a, b) == pytest.approx(7 / 13, abs=1e-15)
    assert iou(a, b) == pytest.approx(dice(a, b) / (2 - dice(a, b)), abs=1e-15)


def test_shifted_cubes_in_3d() -> None:
    # 4 × 4 × 4 cubes shifted by one voxel along the first axis: overlap 3 × 4 × 4 = 48,
    # Dice 96/128 = 0.75, IoU 48/80 = 0.6.
    a = np.zeros((8, 8, 8), dtype=np.uint8)
    b = np.zeros((8, 8, 8), dtype=np.uint8)
    a[2:6, 2:6, 2:6] = 1
    b[3:7, 2:6, 2:6] = 1
    assert dice(a, b) == pytest.approx(0.75, abs=1e-15)
    assert iou(a, b) == pytest.approx(0.6, abs=1e-15)


def test_dice_and_iou_are_symmetric_and_perfect_on_identical_masks() -> None:
    a, b = _square(), _square(4)
    assert dice(a, b) == dice(b, a)
    assert iou(a, b) == iou(b, a)
    assert dice(a, a) == 1.0
    assert iou(a, a) == 1.0


def test_empty_masks() -> None:
    empty = np.zeros((30, 40), dtype=bool)
    # Both empty: both readers outline nothing, perfect agreement by convention.
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    # One empty: no overlap at all.
    assert dice(empty, _square()) == 0.0
    assert iou(_square(), empty) == 0.0


# --- HD95 -----------------------------------------------------------------------------------------


def test_hd95_of_shifted_squares_with_anisotropic_spacing() -> None:
    # Surfaces: the 36-pixel rings of each square; B is A shifted 3 columns. Spacing
    # (row 0.5 mm, column 2.0 mm). From A's ring to B's: 14 pixels on B's ring (0), right
    # column 0.5, 0.5, 1, 1, 1.5, 1.5, 2, 2 (rows nearer B's top/bottom edges), the top and
    # bottom rows' first three pixels 6, 4, 2 each, the left column 8 × 6 mm. Sorted, the
    # 95th percentile sits at position 0.95 · 35 = 33.25, between two 6s: 6 mm = 3 px × 2 mm.
    # By symmetry B → A is the same.
    assert hd95(_square(), _square(3), spacing=(0.5, 2.0)) == pytest.approx(6.0, abs=1e-12)
    # Column spacing 0.5 mm instead: every non-zero distance is ≤ 1.5 mm and 18 of 36 equal
    # 1.5, so the 95th percentile is 1.5 mm = 3 px × 0.5 mm.
    assert hd95(_square(), _square(3), spacing=(2.0, 0.5)) == pytest.approx(1.5, abs=1e-12)


def test_hd95_is_the_95th_percentile_not_the_maximum() -> None:
    # A: a one-pixel-thick line, row 2, columns 2–21 (20 surface pixels). B: A plus two
    # isolated pixels, (10, 21) and (20, 30). A → B: all 0. B → A: 20 zeros, then
    # d1 = distance from (10, 21) to (2, 21) = 8 rows, and d2 from (20, 30) to (2, 21).
    # The 95th percentile of 22 values sits at 0.95 · 21 = 19.95: 0 + 0.95 · (d1 − 0).
    a = np.zeros((30, 40), dtype=bool)
    a[2, 2:22] = True
    b = a.copy()
    b[10, 21] = True
    b[20, 30] = True
    assert hd95(a, b, spacing=1.0) == pytest.approx(0.95 * 8.0, abs=1e-12)  # d2 = √405 ≈ 20.1 is ignored
    assert hd95(a, b, spacing=(0.5, 2.0)) == pytest.approx(0.95 * 4.0, abs=1e-12)  # d1 = 8 × 0.5 mm
    assert hd95(a, b, spacing=(2.0, 0.5)) == pytest.approx(0.95 * 16.0, abs=1e-12)  # d1 = 8 × 2 mm
    assert hd95(b, a, spacing=(2.0, 0.5)) == hd95(a, b, spacing=(2.0, 0.5))


def test_hd95_between_single_voxels_in_3d() -> None:
    # One voxel is its own surface: distance √((3 · 2.5)² + (4 · 0.8)² + 0²) = √66.49 mm.
    a = np.zeros((6, 8, 5), dtype=bool)
    b = np.zeros((6, 8, 5), dtype=bool)
    a[1, 2, 3] = True
    b[4, 6, 3] = True
    assert hd95(a, b, spacing=(2.5, 0.8, 1.0)) == pytest.approx(math.sqrt(66.49), abs=1e-12)


def test_hd95_of_identical_masks_is_zero_and_scalar_spacing_is_isotropic() -> None:
    a, b = _square(), _square(2)
    assert hd95(a, a, spacing=(0.7, 1.3)) == 0.0
    assert hd95(a, b, spacing=0.8) == hd95(a, b, spacing=(0.8, 0.8))


def _random_masks(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.05,
        ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.05,
    )


@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [((64, 48), (0.7, 1.3), 1), ((64, 48), (1.0, 1.0), 2), ((20, 24, 16), (2.5, 0.8, 1.1), 3)],
)
def test_hd95_agrees_with_monai(shape: tuple[int, ...], spacing: tuple[float, ...], seed: int) -> None:
    # MONAI's compute_hausdorff_distance(percentile=95, spacing=…) is the reference
    # definition; it works in float32, hence the relative tolerance.
    from monai.metrics import compute_hausdorff_distance

    a, b = _random_masks(shape, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = compute_hausdorff_distance(
            a[None, None].astype(np.float32),
            b[None, None].astype(np.float32),
            include_background=True,
            percentile=95,
            spacing=list(spacing),
        )
    assert hd95(a, b, spacing=spacing) == pytest.approx(float(reference.reshape(-1)[0]), rel=1e-5)


def test_hd95_of_an_empty_mask_is_refused() -> None:
    empty = np.zeros((30, 40), dtype=bool)
    with pytest.raises(StatsInputError, match="mask b is empty: HD95 is undefined"):
        hd95(_square(), empty, spacing=1.0)
    with pytest.raises(StatsInputError, match="mask a is empty"):
        hd95(empty, empty, spacing=1.0)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((4, 4), bool), np.zeros((4, 5), bool), "differ in shape"),
        (np.zeros(4, bool), np.zeros(4, bool), "2D or 3D"),
        (np.zeros((2, 2, 2, 2), bool), np.zeros((2, 2, 2, 2), bool), "2D or 3D"),
        (np.zeros((0, 4), bool), np.zeros((0, 4), bool), "no pixels"),
        (np.full((4, 4), 2), np.zeros((4, 4), int), "not binary"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), "not binary"),
        (np.full((4, 4), "x"), np.zeros((4, 4), bool), "boolean or 0/1"),
    ],
)
def test_bad_masks_are_rejected(a: np.ndarray, b: np.ndarray, message: str) -> None:
    for metric in (dice, iou):
        with pytest.raises(StatsInputError, match=message):
            metric(a, b)
    with pytest.raises(StatsInputError, match=message):
        hd95(a, b, spacing=1.0)


@pytest.mark.parametrize(
    ("spacing", "message"),
    [((1.0,), "1 values for a 2D mask"), ((1.0, 0.0), "positive"), ((1.0, float("nan")), "positive"), ("ab", "number")],
)
def test_bad_spacing_is_rejected(spacing: object, message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        hd95(_square(), _square(1), spacing=spacing)  # type: ignore[arg-type]


def test_segmentation_module_imports_without_django_or_torch() -> None:
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; import analysis.stats.segmentation; "
        "print(sorted(m for m in ('django', 'torch', 'monai') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
