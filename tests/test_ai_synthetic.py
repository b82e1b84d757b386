"""ai_engine.synthetic and manage.py make_synthetic_data: SYNTHETIC sets in
the layouts scan_dataset reads, labelled synthetic everywhere, the same bytes
for a seed, small and large lesions both common, and look-alikes (echogenic
foci, acoustic shadows, specular highlights) kept out of the masks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image
from scipy import ndimage

from ai_engine.data import scan_dataset
from ai_engine.synthetic import (
    CATEGORIES,
    colposcopy_frame,
    thyroid_frame,
    write_colposcopy_2d,
    write_phantom_3d,
    write_thyroid_ultrasound_2d,
)
from ai_engine.synthetic.phantom import PHANTOM_SPACING
from ai_engine.synthetic.writing import generators


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def lesion_extents(mask: np.ndarray) -> list[int]:
    """Each lesion's extent across (the longer side of its bounding box), in pixels."""
    labelled, _ = ndimage.label(mask)
    return [
        max(rows.stop - rows.start, columns.stop - columns.start) for rows, columns in ndimage.find_objects(labelled)
    ]


def assert_labelled_synthetic(root: Path) -> None:
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["synthetic"] is True and manifest["description"].startswith("SYNTHETIC")
    readme = (root / "README.txt").read_text()
    assert "computer-generated" in readme and "no patient data" in readme and "not for clinical use" in readme.lower()
    data_files = [path for path in root.rglob("*") if path.is_file() and path.parent != root]
    assert data_files and all(path.name.startswith("synthetic_") for path in data_files)


def test_the_thyroid_set_is_a_grey_2d_set_labelled_synthetic(tmp_path: Path) -> None:
    root = write_thyroid_ultrasound_2d(tmp_path / "thyroid", count=12, size=64, seed=1)
    info = scan_dataset(root)
    assert (info.layout, info.in_channels, info.num_classes, len(info.samples)) == ("2d", 1, 2, 12)
    assert info.synthetic and info.description.startswith("SYNTHETIC") and info.categories == CATEGORIES
    assert all(sample.category is not None for sample in info.samples)
    assert Image.open(info.samples[0].image).size == (64, 64)
    assert set(np.unique(np.asarray(Image.open(info.samples[0].mask))).tolist()) <= {0, 255}
    assert_labelled_synthetic(root)


def test_the_colposcopy_set_is_an_rgb_2d_set_labelled_synthetic(tmp_path: Path) -> None:
    root = write_colposcopy_2d(tmp_path / "colposcopy", count=6, size=64, seed=1)
    info = scan_dataset(root)
    assert (info.layout, info.in_channels, info.num_classes, len(info.samples)) == ("2d", 3, 2, 6)
    assert info.synthetic and info.class_names == ("background", "acetowhite lesion")
    assert_labelled_synthetic(root)


def test_the_phantom_is_an_msd_set_with_its_spacing_labelled_synthetic(tmp_path: Path) -> None:
    root = write_phantom_3d(tmp_path / "phantom", count=3, size=24, seed=1)
    info = scan_dataset(root)
    assert (info.layout, info.spatial_dims, info.in_channels, info.num_classes) == ("3d", 3, 1, 2)
    assert info.synthetic and info.description.startswith("SYNTHETIC") and len(info.samples) == 3
    first = nib.Nifti1Image.from_filename(info.samples[0].mask)
    assert first.shape == (24, 24, 24) and np.allclose(first.header.get_zooms(), PHANTOM_SPACING)
    assert all(nib.Nifti1Image.from_filename(sample.mask).get_fdata().any() for sample in info.samples)
    assert_labelled_synthetic(root)


@pytest.mark.parametrize(
    ("writer", "size"), [(write_thyroid_ultrasound_2d, 48), (write_colposcopy_2d, 48), (write_phantom_3d, 16)]
)
def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_images(
    tmp_path: Path, writer: Callable[..., Path], size: int
) -> None:
    first = folder_bytes(writer(tmp_path / "first", count=3, size=size, seed=5))
    again = folder_bytes(writer(tmp_path / "again", count=3, size=size, seed=5))
    other = folder_bytes(writer(tmp_path / "other", count=3, size=size, seed=6))
    assert first == again
    images = [name for name in first if name.startswith(("images/", "imagesTr/"))]
    assert len(images) == 3 and all(first[name] != other[name] for name in images)


def test_an_image_does_not_depend_on_how_many_are_made(tmp_path: Path) -> None:
    few = folder_bytes(write_thyroid_ultrasound_2d(tmp_path / "few", count=2, size=48, seed=3))
    many = folder_bytes(write_thyroid_ultrasound_2d(tmp_path / "many", count=5, size=48, seed=3))
    assert few["images/synthetic_thyroid_0001.png"] == many["images/synthetic_thyroid_0001.png"]


@pytest.mark.parametrize("writer", [write_thyroid_ultrasound_2d, write_colposcopy_2d])
def test_small_and_large_lesions_are_both_common_and_categories_follow_the_rule(
    tmp_path: Path, writer: Callable[..., Path]
) -> None:
    root = writer(tmp_path / "set", count=40, size=128, seed=2)
    with (root / "labels.csv").open() as handle:
        categories = {row["name"]: row["category"] for row in csv.DictReader(handle)}
    extents: list[int] = []
    for name, category in categories.items():
        found = lesion_extents(np.asarray(Image.open(root / "masks" / f"{name}.png")) > 0)
        extents += found
        expected = "normal" if not found else "high-grade" if max(found) >= 10 else "low-grade"
        assert category == expected, name
    small = sum(extent < 10 for extent in extents)
    assert sum(extent >= 20 for extent in extents) >= 10 and small >= 10
    assert 0.25 <= small / len(extents) <= 0.6
    assert set(categories.values()) == set(CATEGORIES)


def test_echogenic_foci_and_acoustic_shadows_are_not_in_the_thyroid_masks() -> None:
    frames = [thyroid_frame(rng, 128) for rng in generators(4, 20)]
    foci = [frame for frame in frames if frame.distractors["echogenic_foci"].any()]
    shadowed = [frame for frame in frames if frame.distractors["acoustic_shadows"].any()]
    assert len(foci) >= 10 and len(shadowed) >= 5
    for frame in foci:
        dots = frame.distractors["echogenic_foci"]
        assert frame.image[dots].min() >= 240 and not frame.mask[dots].any()
    for frame in shadowed:
        shadow = frame.distractors["acoustic_shadows"]
        assert frame.image[shadow].mean() < 0.7 * frame.image[~shadow & (frame.image > 0)].mean()
        assert not frame.mask[shadow].any()


def test_nodules_are_darker_than_the_tissue_around_them() -> None:
    for frame in (thyroid_frame(rng, 128) for rng in generators(5, 10)):
        if frame.mask.any():
            ring = ndimage.binary_dilation(frame.mask, iterations=4) & ~ndimage.binary_dilation(frame.mask)
            assert frame.image[frame.mask].mean() < 0.75 * frame.image[ring].mean()


def test_acetowhite_lesions_are_whiter_than_the_cervix_and_highlights_are_brighter_still() -> None:
    frames = [colposcopy_frame(rng, 128) for rng in generators(6, 10)]
    for frame in frames:
        green = frame.image[..., 1].astype(float)  # pink tissue is low in green, white high
        if frame.mask.any():
            ring = ndimage.binary_dilation(frame.mask, iterations=4) & ~ndimage.binary_dilation(frame.mask)
            assert green[frame.mask].mean() > green[ring].mean() + 30
        glare = frame.distractors["specular_highlights"]
        assert frame.image[glare & ~frame.mask].min() >= 200
    assert sum(frame.distractors["specular_highlights"].any() for frame in frames) >= 8


def make_synthetic_data(*arguments: str) -> str:
    out = io.StringIO()
    call_command("make_synthetic_data", *arguments, stdout=out)
    return out.getvalue()


def test_the_command_writes_a_set_and_says_it_is_synthetic(tmp_path: Path) -> None:
    output = make_synthetic_data("--kind", "thyroid", "--count", "5", "--size", "48", "--out", str(tmp_path / "set"))
    assert "Wrote 5 SYNTHETIC thyroid images" in output and "no patient data" in output
    assert scan_dataset(tmp_path / "set").synthetic
    output = make_synthetic_data("--kind", "phantom3d", "--count", "2", "--size", "16", "--out", str(tmp_path / "3d"))
    assert "Wrote 2 SYNTHETIC phantom3d volumes" in output and scan_dataset(tmp_path / "3d").layout == "3d"


def test_the_command_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("someone's work")
    arguments = ("--kind", "colposcopy", "--count", "3", "--size", "48", "--out", str(tmp_path))
    with pytest.raises(CommandError, match="is not empty"):
        make_synthetic_data(*arguments)
    assert not (tmp_path / "images").exists()
    make_synthetic_data(*arguments, "--force")
    make_synthetic_data("--kind", "colposcopy", "--count", "2", "--size", "48", "--out", str(tmp_path), "--force")
    assert (tmp_path / "notes.txt").exists() and len(scan_dataset(tmp_path).samples) == 2
