"""Agreement between two segmentation masks (an AI outline against a
reader's, or two readers'): Dice, IoU (Jaccard) and the 95th-percentile
Hausdorff distance.

Masks are 2D or 3D numpy arrays of the same shape, boolean or 0/1. HD95
follows MONAI's compute_hausdorff_distance(percentile=95, spacing=…)
definition exactly (tested against it) but is computed here with scipy, so
that the statistics library does not import torch: importing MONAI takes
about 4 s on the project's machine, scipy.ndimage and scipy.spatial well
under 1 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from analysis.stats.core import StatsInputError


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient 2|A ∩ B| / (|A| + |B|) (Dice 1945).

    Both masks empty gives 1.0: two readers who both outline nothing
    agree perfectly (MONAI's DiceMetric with ignore_empty=False does the
    same). One empty and one not gives 0.0."""
    first, second = _masks(a, b)
    total = int(first.sum()) + int(second.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(first, second).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union |A ∩ B| / |A ∪ B| (Jaccard index); equals
    Dice / (2 − Dice). Both masks empty gives 1.0, as for `dice`."""
    first, second = _masks(a, b)
    union = int(np.logical_or(first, second).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(first, second).sum()) / union


def hd95(a: np.ndarray, b: np.ndarray, spacing: float | Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance, in the units of
    `spacing` (millimetres per pixel/voxel along each axis, in the array's
    axis order; a single number means isotropic).

    As MONAI's compute_hausdorff_distance(percentile=95, spacing=…): the
    surface of a mask is its voxels that a binary erosion with the
    face-connected structuring element removes (voxels on the array's edge
    count as surface). For every surface voxel of A the Euclidean distance
    to the nearest surface voxel of B is taken, and vice versa; HD95 is the
    larger of the two 95th percentiles (linear interpolation between order
    statistics, as numpy.percentile and torch.quantile).

    An empty mask has no surface and the distance is undefined: either
    mask empty raises StatsInputError (MONAI would return inf or nan).
    Count such images apart; Dice and IoU do handle them."""
    first, second = _masks(a, b)
    sampling = _spacing(spacing, first.ndim)
    for mask, name in ((first, "a"), (second, "b")):
        if not mask.any():
            raise StatsInputError(
                f"mask {name} is empty: HD95 is undefined without an outline (Dice and IoU are defined)."
            )
    surface_a = _surface_points(first, sampling)
    surface_b = _surface_points(second, sampling)
    a_to_b = cKDTree(surface_b).query(surface_a, k=1)[0]
    b_to_a = cKDTree(surface_a).query(surface_b, k=1)[0]
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def _surface_points(mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Physical coordinates (index × spacing) of the mask's surface voxels."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return np.argwhere(mask & ~eroded).astype(np.float64) * sampling


def _masks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = _mask(a, "a")
    second = _mask(b, "b")
    if first.shape != second.shape:
        raise StatsInputError(f"masks differ in shape: a is {first.shape}, b is {second.shape}.")
    return first, second


def _mask(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim not in (2, 3):
        raise StatsInputError(f"mask {name} must be a 2D or 3D array (got {array.ndim} dimensions).")
    if array.size == 0:
        raise StatsInputError(f"mask {name} has no pixels (shape {array.shape}).")
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise StatsInputError(f"mask {name} must be boolean or 0/1 numbers (got dtype {array.dtype}).")
    if not np.isin(array, (0, 1)).all():
        raise StatsInputError(f"mask {name} is not binary: values other than 0 and 1 found.")
    return array.astype(bool)


def _spacing(spacing: float | Sequence[float], dimensions: int) -> np.ndarray:
    if isinstance(spacing, int | float | np.number):
        values = [float(spacing)] * dimensions
    else:
        try:
            values = [float(step) for step in spacing]
        except (TypeError, ValueError):
            raise StatsInputError(f"spacing must be a number or one number per axis (got {spacing!r}).") from None
    if len(values) != dimensions:
        raise StatsInputError(f"spacing has {len(values)} values for a {dimensions}D mask; give one per axis.")
    for step in values:
        if not math.isfinite(step) or step <= 0.0:
            raise StatsInputError(f"spacing must be positive and finite (got {step}).")
    return np.asarray(values, dtype=np.float64)
