"""SYNTHETIC 3D phantom volumes in the Medical Segmentation Decathlon layout
(computer-generated, no patient data)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ai_engine.synthetic.shapes import smooth_noise
from ai_engine.synthetic.writing import PREFIX, README, check_arguments, generators, prepare_folder, write_manifest

PHANTOM_SPACING = (0.8, 0.8, 1.5)  # mm; anisotropic like most CT and MRI series


def phantom_volume(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy ellipsoidal 'organ' holding one to three brighter ellipsoid
    lesions, small (2.5–4 voxels across at 32) or large (8–14): (image float32, label uint8)."""
    shape = (size, size, size)
    grid = np.mgrid[0:size, 0:size, 0:size].astype(np.float64)
    centre = np.array(shape) / 2
    organ_radii = np.array([0.42, 0.38, 0.45]) * size
    organ = np.sqrt(sum(((grid[axis] - centre[axis]) / organ_radii[axis]) ** 2 for axis in range(3))) < 1
    image = 0.05 + organ * (0.4 + 0.04 * smooth_noise(rng, shape, size / 10))
    label = np.zeros(shape, dtype=np.uint8)
    scale = size / 32
    for _ in range(int(rng.integers(1, 4))):
        across = (rng.uniform(2.5, 4.0) if rng.random() < 0.45 else rng.uniform(8.0, 14.0)) * scale
        radii = across / 2 * rng.uniform(0.75, 1.0, size=3)
        for _attempt in range(40):
            lesion_centre = centre + rng.uniform(-0.5, 0.5, size=3) * (organ_radii - radii.max() - 1)
            distance = np.sqrt(sum(((grid[axis] - lesion_centre[axis]) / radii[axis]) ** 2 for axis in range(3)))
            inside = distance < 1
            if inside.any() and not (ndimage.binary_dilation(inside, iterations=2) & (label > 0)).any():
                image = image + 0.35 / (1 + np.exp((distance - 1) * 4))
                label[inside] = 1
                break
    image = image + rng.normal(0, 0.06, shape)
    return image.astype(np.float32), label


def write_nifti(path: Path, array: np.ndarray) -> None:
    """gzip with a fixed time stamp so the same volume gives the same bytes."""
    volume = nib.Nifti1Image(array, np.diag([*PHANTOM_SPACING, 1.0]))
    volume.header.set_xyzt_units("mm")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as compressed:
        compressed.write(volume.to_bytes())
    path.write_bytes(buffer.getvalue())


def write_phantom_3d(out_dir: str | Path, *, count: int, size: int = 32, seed: int = 0) -> Path:
    """SYNTHETIC 3D phantom volumes in the Medical Segmentation Decathlon layout; returns the folder."""
    check_arguments(count, size, smallest=16)
    root = prepare_folder(out_dir, ("imagesTr", "labelsTr"))
    training = []
    for index, rng in enumerate(generators(seed, count)):
        image, label = phantom_volume(rng, size)
        name = f"{PREFIX}phantom_{index:03d}.nii.gz"
        write_nifti(root / "imagesTr" / name, image)
        write_nifti(root / "labelsTr" / name, label)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    manifest = {
        "name": "synthetic-phantom-3d",
        "description": f"SYNTHETIC 3D phantom, computer-generated (no patient data, not for clinical use); "
        f"{count} volumes of {size}^3 voxels, spacing {PHANTOM_SPACING} mm, seed {seed}.",
        "synthetic": True,
        "tensorImageSize": "3D",
        "modality": {"0": "synthetic"},
        "channel_names": {"0": "synthetic"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": count,
        "numTest": 0,
        "training": training,
        "test": [],
        "generator": {"module": "ai_engine.synthetic", "kind": "phantom3d", "count": count, "size": size, "seed": seed},
    }
    details = "Layout: Medical Segmentation Decathlon (imagesTr/, labelsTr/ NIfTI, dataset.json); label 1 = lesion."
    write_manifest(
        root,
        manifest,
        README.format(kind="phantom3d", seed=seed, amount=f"{count} volumes of {size}^3 voxels", details=details),
    )
    return root
