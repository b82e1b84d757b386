"""SYNTHETIC thyroid ultrasound-like frames (computer-generated, no patient data)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ai_engine.synthetic.shapes import (
    REFERENCE_SIZE,
    Frame,
    blob,
    category_of,
    lesion_plan,
    place_centres,
    smooth_noise,
)


def thyroid_frame(rng: np.random.Generator, size: int) -> Frame:
    """Grey ultrasound-like frame: tissue with depth attenuation and a strap
    muscle band, multiplicative Rayleigh speckle, hypoechoic nodules, and two
    look-alikes that are not lesions: echogenic foci (tiny bright dots) and
    acoustic shadows (dark vertical bands below a bright reflector)."""
    shape = (size, size)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64)
    depth = rows / size
    echo = (0.55 + 0.06 * smooth_noise(rng, shape, size / 16)) * (1 - 0.3 * depth)
    muscle_bottom = size * rng.uniform(0.12, 0.2) + 2 * np.sin(columns / size * rng.uniform(2, 6))
    echo *= np.where((rows > size * 0.05) & (rows < muscle_bottom), 0.7, 1.0)

    field_of_view = np.ones(shape, dtype=bool)
    if rng.random() < 0.5:  # a curved (sector) probe; otherwise a linear probe fills the frame
        apex_row, half_angle = -0.4 * size, np.deg2rad(rng.uniform(28, 38))
        beam_angle = np.arctan2(columns - size / 2, rows - apex_row)
        field_of_view = (np.abs(beam_angle) < half_angle) & (np.hypot(columns - size / 2, rows - apex_row) < 1.5 * size)

    def nodule_fits(row: float, column: float, across: float) -> bool:
        """Below the strap muscle and wholly inside the beam, so no nodule is cut short."""
        reach = across / 2 + 2
        if not (reach < row < size - reach and reach < column < size - reach and row > size * 0.22):
            return False
        ends = [(row, column - reach), (row, column + reach), (row - reach, column), (row + reach, column)]
        return all(field_of_view[int(end_row), int(end_column)] for end_row, end_column in ends)

    mask = np.zeros(shape, dtype=bool)
    diameters: list[float] = []
    for across, centre in place_centres(rng, lesion_plan(rng, size), nodule_fits, size):
        membership, inside = blob(rng, shape, centre, across, irregular=0.15 if across >= 10 else 0.0)
        darkness = rng.uniform(0.5, 0.75) if across >= 10 else rng.uniform(0.7, 0.85)  # small ones darker to be seen
        echo *= 1 - darkness * membership
        mask |= inside & field_of_view
        diameters.append(across)

    shadows = np.zeros(shape, dtype=bool)
    reflectors = np.zeros(shape, dtype=bool)
    lesion_columns = np.flatnonzero(ndimage.binary_dilation(mask.any(axis=0), iterations=4))
    for _ in range(int(rng.integers(0, 3))):
        width = rng.uniform(3, 8) * size / REFERENCE_SIZE
        column = float(rng.uniform(width, size - width))
        band = np.abs(columns[0] - column) < width
        if np.isin(np.flatnonzero(band), lesion_columns).any():
            continue  # a shadow across a nodule would hide part of it
        top = float(rng.uniform(0.25, 0.6) * size)
        lateral = 1 / (1 + np.exp((np.abs(columns - column) - width / 2) / 0.8))
        below = 1 / (1 + np.exp(-(rows - top - 2) / 1.0))
        echo *= 1 - rng.uniform(0.55, 0.75) * lateral * below
        reflector = (np.abs(rows - top) < 1.2) & (np.abs(columns - column) < width / 2)
        echo = np.where(reflector, 1.6, echo)
        shadows |= (lateral * below > 0.5) & field_of_view
        reflectors |= reflector & field_of_view

    speckle = rng.rayleigh(1.0, shape) / np.sqrt(np.pi / 2)  # mean 1: multiplicative, as in real B-mode
    speckle = ndimage.gaussian_filter(speckle, sigma=(0.5, 0.9))
    picture = echo * speckle * 200

    foci = np.zeros(shape, dtype=bool)
    keep_clear = ndimage.binary_dilation(mask | shadows | reflectors, iterations=3)
    for _ in range(int(rng.integers(2, 7))):
        row, column = int(rng.integers(2, size - 2)), int(rng.integers(2, size - 2))
        if keep_clear[row, column] or not field_of_view[row, column]:
            continue
        dot = ((rows - row) ** 2 + (columns - column) ** 2 <= rng.uniform(0.5, 1.7)) & field_of_view
        picture = np.where(dot, rng.uniform(240, 255), picture)
        foci |= dot
    picture = np.where(field_of_view, picture, 0.0)
    image = np.clip(np.rint(picture), 0, 255).astype(np.uint8)
    return Frame(
        image=image,
        mask=mask,
        category=category_of(diameters),
        distractors={"echogenic_foci": foci, "acoustic_shadows": shadows, "reflectors": reflectors},
    )
