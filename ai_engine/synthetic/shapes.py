"""Shared pieces of the synthetic generators: the lesion-size plan that
makes small and large lesions both common, irregular blobs, placement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

CATEGORIES = ("normal", "low-grade", "high-grade")
CATEGORY_RULE = (
    "normal: no lesion; low-grade: only small lesions (under 10 px across); "
    "high-grade: at least one large lesion (20 px or more across at 128 px)"
)
SMALL_ACROSS = (3.0, 9.0)  # pixels, at every image size
LARGE_ACROSS = (20.0, 50.0)  # pixels at 128 px, scaled with the image
REFERENCE_SIZE = 128
LESION_SIZES = (
    "small ones 3–9 px across at every image size, large ones 20–50 px across at 128 px "
    "(in proportion at other sizes); about 40 % of lesions are small"
)


@dataclass
class Frame:
    """One generated picture with its lesion mask and, for tests, where the
    look-alikes that are not lesions were drawn."""

    image: np.ndarray  # uint8 (H, W) grey or (H, W, 3) RGB
    mask: np.ndarray  # bool (H, W), lesions only
    category: str
    distractors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool (H, W)


def lesion_plan(rng: np.random.Generator, size: int) -> list[float]:
    """Diameters (px) of the lesions of one image: a fifth normal, a quarter
    with one (sometimes two) small lesions, the rest with a large one
    (sometimes two) and now and then a small one beside it: about 40 % of
    the lesions are small."""
    draw = rng.random()
    scale = size / REFERENCE_SIZE
    small = [float(rng.uniform(*SMALL_ACROSS)) for _ in range(1 + int(rng.random() < 0.3))]
    large = [float(rng.uniform(*LARGE_ACROSS)) * scale for _ in range(1 + int(rng.random() < 0.2))]
    if draw < 0.2:
        return []
    if draw < 0.45:
        return small
    return large + small[: int(rng.random() < 0.25)]


def category_of(diameters: list[float]) -> str:
    if not diameters:
        return "normal"
    return "high-grade" if max(diameters) >= 10 else "low-grade"


def blob(
    rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], across: float, irregular: float
) -> tuple[np.ndarray, np.ndarray]:
    """A rotated ellipse whose outline wobbles by up to `irregular` of its
    radius: (soft membership in [0, 1], inside). The longest axis is
    `across`; inside uses a strict inequality so a lesion never spans more
    whole pixels than its diameter."""
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.65, 1.0)
    along = (rows - centre[0]) * np.cos(angle) + (columns - centre[1]) * np.sin(angle)
    across_axis = -(rows - centre[0]) * np.sin(angle) + (columns - centre[1]) * np.cos(angle)
    distance = np.hypot(along, across_axis / aspect)
    theta = np.arctan2(across_axis, along)
    wobble = sum(
        rng.uniform(0, irregular / 3) * np.cos(order * theta + rng.uniform(0, 2 * np.pi)) for order in (2, 3, 5)
    )
    radius = across / 2 * (1 - irregular + wobble) if irregular else np.full_like(theta, across / 2)
    softness = max(across / 20, 0.4)
    membership = 1 / (1 + np.exp(np.clip((distance - radius) / softness, -30, 30)))
    return membership, distance < radius


def place_centres(
    rng: np.random.Generator,
    diameters: list[float],
    allowed: Callable[[float, float, float], bool],
    size: int,
) -> list[tuple[float, tuple[float, float]]]:
    """Centres for the lesions, largest first, kept apart so that no two
    lesions touch (each stays one connected region); a lesion that finds no
    room after some tries is left out."""
    placed: list[tuple[float, tuple[float, float]]] = []
    for across in sorted(diameters, reverse=True):
        for _ in range(60):
            centre = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
            apart = all(
                np.hypot(centre[0] - other[0], centre[1] - other[1]) > (across + other_across) / 2 * 1.2 + 3
                for other_across, other in placed
            )
            if apart and allowed(*centre, across):
                placed.append((across, centre))
                break
    return placed


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Low-frequency noise scaled to unit standard deviation."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field_ / (field_.std() + 1e-9)
