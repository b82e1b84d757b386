"""SYNTHETIC colposcopy-like photographs (computer-generated, no patient data)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ai_engine.synthetic.shapes import Frame, blob, category_of, lesion_plan, place_centres, smooth_noise


def colposcopy_frame(rng: np.random.Generator, size: int) -> Frame:
    """RGB colposcopy-like photograph after acetic acid: a pink cervix with a
    dark os, sometimes a red columnar (ectropion) area around the os and
    specular highlights (look-alikes, not lesions), and acetowhite lesions
    (whitish irregular patches, some with fine red punctation)."""
    shape = (size, size)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (size / 2 + rng.uniform(-0.05, 0.05) * size, size / 2 + rng.uniform(-0.05, 0.05) * size)
    radius = rng.uniform(0.4, 0.46) * size
    flatten = rng.uniform(0.85, 1.0)
    spread = np.hypot(rows - centre[0], (columns - centre[1]) * flatten) / radius
    cervix = spread < 1
    cervix_soft = 1 / (1 + np.exp((spread - 1) * radius / 1.5))

    pink = np.array([rng.uniform(210, 235), rng.uniform(115, 145), rng.uniform(120, 150)])
    texture = 1 + 0.04 * smooth_noise(rng, shape, size / 20)
    dome = (0.8 + 0.2 * np.clip(1 - spread**2, 0, 1)) * texture
    wall = np.array([95.0, 40.0, 45.0]) * (0.7 + 0.3 * np.exp(-(spread**2)))[..., None]
    colour = wall * (1 - cervix_soft[..., None]) + (pink * dome[..., None]) * cervix_soft[..., None]

    os_radius = rng.uniform(0.06, 0.09) * size
    os_distance = np.hypot((rows - centre[0]) / rng.uniform(0.3, 0.6), columns - centre[1]) / os_radius
    os_region = os_distance < 1.4  # the os and a rim kept free of lesions

    ectropion = np.zeros(shape, dtype=bool)
    if rng.random() < 0.5:
        membership, ectropion = blob(rng, shape, centre, rng.uniform(0.3, 0.55) * radius * 2, irregular=0.25)
        colour += (np.array([195.0, 70.0, 80.0]) - colour) * (0.6 * membership * cervix_soft)[..., None]

    def lesion_fits(row: float, column: float, across: float) -> bool:
        distance = np.hypot(row - centre[0], (column - centre[1]) * flatten)
        # Clear of the os; a large lesion may run off the cervix and is cut at its edge.
        return bool(os_radius * 1.6 + across / 2 * 1.15 < distance < min(0.8 * radius + across / 4, radius - 3))

    mask = np.zeros(shape, dtype=bool)
    diameters: list[float] = []
    for across, lesion_centre in place_centres(rng, lesion_plan(rng, size), lesion_fits, size):
        membership, inside = blob(rng, shape, lesion_centre, across, irregular=0.3 if across >= 10 else 0.0)
        white = np.array([238.0, 228.0, 226.0]) * rng.uniform(0.95, 1.02)
        opacity = rng.uniform(0.65, 0.85) if across >= 10 else rng.uniform(0.8, 0.95)
        colour += (white - colour) * (opacity * membership * cervix_soft)[..., None]
        lesion = inside & cervix & ~os_region
        if rng.random() < (0.5 if across >= 10 else 0.25):
            spacing = rng.uniform(3, 5)
            dots = (np.abs(((rows + rng.uniform(0, spacing)) % spacing) - spacing / 2) < 0.5) & (
                np.abs(((columns + rng.uniform(0, spacing)) % spacing) - spacing / 2) < 0.5
            )
            dots &= ndimage.binary_erosion(lesion) & (rng.random(shape) < 0.8)
            colour = np.where(dots[..., None], np.array([165.0, 45.0, 55.0]), colour)
        mask |= lesion
        diameters.append(across)

    os_soft = 1 / (1 + np.exp((os_distance - 1) * os_radius / 1.2))
    colour += (np.array([100.0, 25.0, 35.0]) - colour) * os_soft[..., None]

    highlights = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(3, 10))):
        row, column = rng.uniform(0, size), rng.uniform(0, size)
        if not cervix[int(row), int(column)]:
            continue
        glare = np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / (2 * rng.uniform(0.6, 1.8) ** 2))
        colour += (255.0 - colour) * glare[..., None]
        highlights |= glare > 0.75

    colour = ndimage.gaussian_filter(colour, sigma=(0.5, 0.5, 0)) + rng.normal(0, 3, colour.shape)
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    return Frame(
        image=image,
        mask=mask,
        category=category_of(diameters),
        distractors={"specular_highlights": highlights, "ectropion": ectropion & ~mask},
    )
