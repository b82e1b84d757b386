"""From the network's logits to a lesion mask and the figures a reader
checks: per lesion its area, largest diameter and centroid, in pixels and,
when the pixel spacing is known, in millimetres.

Components are 8-connected (touching diagonally counts), as in
ai_engine.evaluation's lesion counting. Diameters are distances between pixel
centres, so a disc of radius r px measures 2r px across."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Fewer points than this are compared pairwise directly; more go through their convex hull first (the largest
# distance between points is always between two hull vertices, and a hull has far fewer of them).
_HULL_FROM_POINTS = 16


def lesion_probability(logits: torch.Tensor) -> np.ndarray:
    """(H, W) float32 probability of any lesion from logits (K, H, W): one
    minus the background's softmax share (for two classes: class 1's)."""
    probabilities = torch.softmax(logits.float(), dim=0)
    return (1.0 - probabilities[0]).clamp(0.0, 1.0).numpy()


def lesion_mask(probability: np.ndarray, *, threshold: float, min_component_px: int) -> np.ndarray:
    """uint8 (H, W) 0/1: above the threshold, without components smaller than
    min_component_px (isolated speckle, not lesions)."""
    above = probability > threshold
    components, count = ndimage.label(above, structure=_EIGHT_CONNECTED)
    if count == 0:
        return above.astype(np.uint8)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_component_px
    keep[0] = False
    return keep[components].astype(np.uint8)


def measure_lesions(
    mask: np.ndarray,
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
    probability: np.ndarray | None = None,
) -> dict[str, Any]:
    """lesion_count, total_area_px, total_area_mm2 (None without spacing) and
    lesions: one dict per component, largest first, with area_px, area_mm2,
    largest_diameter_px, largest_diameter_mm, centroid (row, column) and, with
    a probability map, mean_probability."""
    components, _ = ndimage.label(np.asarray(mask) > 0, structure=_EIGHT_CONNECTED)
    pixel_area_mm2 = pixel_spacing_mm[0] * pixel_spacing_mm[1] if pixel_spacing_mm is not None else None
    lesions: list[dict[str, Any]] = []
    for label, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        region = components[box] == label
        area_px = int(region.sum())
        rows, columns = np.nonzero(region)
        centroid = (float(rows.mean() + box[0].start), float(columns.mean() + box[1].start))
        diameter_px, diameter_mm = _largest_diameter(region, pixel_spacing_mm)
        lesion: dict[str, Any] = {
            "area_px": area_px,
            "area_mm2": area_px * pixel_area_mm2 if pixel_area_mm2 is not None else None,
            "largest_diameter_px": diameter_px,
            "largest_diameter_mm": diameter_mm,
            "centroid": centroid,
        }
        if probability is not None:
            lesion["mean_probability"] = float(np.asarray(probability[box], dtype=np.float32)[region].mean())
        lesions.append(lesion)
    lesions.sort(key=lambda lesion: -lesion["area_px"])
    total_area_px = sum(lesion["area_px"] for lesion in lesions)
    return {
        "lesion_count": len(lesions),
        "lesions": lesions,
        "total_area_px": total_area_px,
        "total_area_mm2": total_area_px * pixel_area_mm2 if pixel_area_mm2 is not None else None,
    }


def _largest_diameter(region: np.ndarray, pixel_spacing_mm: tuple[float, float] | None) -> tuple[float, float | None]:
    """The largest distance between two pixel centres of a component (its
    boundary pixels suffice), in pixels and, with spacing, in millimetres
    (rows and columns scaled separately, so anisotropic pixels are right)."""
    boundary = region & ~ndimage.binary_erosion(region, structure=_EIGHT_CONNECTED)
    points = np.argwhere(boundary).astype(np.float64)
    if len(points) < 2:
        return 0.0, (0.0 if pixel_spacing_mm is not None else None)
    if len(points) >= _HULL_FROM_POINTS:
        # "QJ" joggles the input so that a component on one straight line still has a hull
        points = points[ConvexHull(points, qhull_options="QJ").vertices]
    diameter_px = float(pdist(points).max())
    if pixel_spacing_mm is None:
        return diameter_px, None
    return diameter_px, float(pdist(points * np.asarray(pixel_spacing_mm, dtype=np.float64)).max())
