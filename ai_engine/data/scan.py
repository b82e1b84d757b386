"""scan_dataset: find the layout, check every file, and describe the set.
Everything is validated here, before training starts, so that a bad mask is
reported in seconds and not as a crash hours into a run."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ai_engine.data.folders import scan_folder_pairs
from ai_engine.data.problems import Problems, some
from ai_engine.data.reading import IMAGE_SUFFIXES, nifti_stem
from ai_engine.data.records import DataError, DatasetInfo, Sample, data_fingerprint
from ai_engine.data.volumes import scan_volumes

MANIFEST = "dataset.json"
CATEGORY_TABLE = "labels.csv"


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(manifest, dict):
        raise DataError(f"{path} must hold a JSON object.")
    return manifest


def declared_classes(manifest: dict[str, Any], root: Path) -> tuple[str, ...]:
    """Class names in class order from dataset.json "labels": MSD writes
    {"0": "background", "1": "tumour"}, nnU-Net v2 {"background": 0, "tumour": 1}."""
    labels = manifest.get("labels")
    if not labels:
        return ()
    if not isinstance(labels, dict):
        raise DataError(f"'labels' in {root / MANIFEST} must be an object of class numbers and names.")
    try:
        if all(str(key).isdigit() for key in labels):
            by_number = {int(key): str(name) for key, name in labels.items()}
        else:
            by_number = {int(number): str(name) for name, number in labels.items()}
    except (TypeError, ValueError) as error:
        raise DataError(
            f"'labels' in {root / MANIFEST} maps names to {error}; region-based labels (lists) are not supported."
        ) from error
    if sorted(by_number) != list(range(len(by_number))):
        raise DataError(f"'labels' in {root / MANIFEST} must number the classes 0, 1, 2 … without gaps.")
    return tuple(by_number[number] for number in range(len(by_number)))


def read_category_table(root: Path, layout: str) -> dict[str, str]:
    """labels.csv (columns name,category): image-level category names by sample name."""
    path = root / CATEGORY_TABLE
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"name", "category"} <= set(reader.fieldnames):
                raise DataError(f"{path} must have the columns name,category (found {reader.fieldnames}).")
            rows = [(row["name"].strip(), (row["category"] or "").strip()) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} cannot be read ({error}).") from error
    table: dict[str, str] = {}
    repeated: list[str] = []
    for name, category in rows:
        key = sample_key(name, layout)
        if key in table:
            repeated.append(name)
        table[key] = category
    if repeated:
        raise DataError(f"{path} names some images more than once: {some(repeated)}.")
    return table


def sample_key(name: str, layout: str) -> str:
    """An image is named in labels.csv with or without its extension."""
    if layout == "3d":
        return nifti_stem(Path(name))
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name


def attach_categories(
    samples: tuple[Sample, ...], root: Path, layout: str, manifest: dict[str, Any]
) -> tuple[tuple[Sample, ...], tuple[str, ...]]:
    declared = manifest.get("categories")
    if declared is not None and (not isinstance(declared, list) or not all(isinstance(c, str) for c in declared)):
        raise DataError(f"'categories' in {root / MANIFEST} must be a list of names.")
    table = read_category_table(root, layout)
    # Without a declared order the names are sorted; dataset.json fixes the order (normal < low-grade < high-grade).
    categories = tuple(declared) if declared else tuple(sorted({name for name in table.values() if name}))
    problems = Problems(root)
    unknown_names = sorted(set(table) - {sample.name for sample in samples})
    if unknown_names:
        problems.add(f"{CATEGORY_TABLE} names images that are not in the data set: {some(unknown_names)}.")
    unknown_categories = sorted({name for name in table.values() if name and name not in categories})
    if unknown_categories:
        problems.add(
            f"{CATEGORY_TABLE} uses categories that dataset.json does not declare: {some(unknown_categories)} "
            f"(declared: {', '.join(categories)})."
        )
    problems.raise_if_any()
    index = {name: number for number, name in enumerate(categories)}
    with_categories = tuple(
        dataclasses.replace(sample, category=index[table[sample.name]]) if table.get(sample.name) else sample
        for sample in samples
    )
    return with_categories, categories


def scan_dataset(root: str | os.PathLike[str], *, num_classes: int | None = None) -> DatasetInfo:
    """Finds the layout of the data set at root, checks every image and mask,
    and returns its description; raises DataError naming the files at fault.

    2D: root/images/ + root/masks/ (optional dataset.json and labels.csv).
    3D: root/dataset.json in the MSD ("training" list) or nnU-Net v2 style.
    num_classes counts the background; when not given it is taken from
    "labels" in dataset.json, else read off the masks (0/1 or 0/255: two)."""
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"the data set folder {folder} does not exist.")
    if num_classes is not None and num_classes < 2:
        raise DataError(f"num_classes counts the background and must be at least 2, not {num_classes}.")
    manifest = read_manifest(folder)
    class_names = declared_classes(manifest, folder)
    wanted_classes = num_classes if num_classes is not None else (len(class_names) or None)
    if class_names and wanted_classes != len(class_names):
        class_names = ()  # the caller's class count overrides the names dataset.json gives

    if (folder / "images").is_dir():
        layout, spatial_dims = "2d", 2
        found_pairs = scan_folder_pairs(folder, num_classes=wanted_classes)
        samples, in_channels, classes = found_pairs.samples, found_pairs.in_channels, found_pairs.num_classes
        generated = f"2D folder dataset, {len(samples)} images"
    elif manifest and ("training" in manifest or "file_ending" in manifest or "channel_names" in manifest):
        layout, spatial_dims = "3d", 3
        found_volumes = scan_volumes(folder, manifest, num_classes=wanted_classes)
        samples, in_channels, classes = found_volumes.samples, found_volumes.in_channels, found_volumes.num_classes
        generated = f"3D NIfTI dataset, {len(samples)} volumes"
    else:
        raise DataError(
            f"no images found in {folder}: expected images/ and masks/ folders (2D) or a dataset.json "
            "with imagesTr/ and labelsTr/ (3D, Medical Segmentation Decathlon or nnU-Net layout)."
        )

    samples, categories = attach_categories(samples, folder, layout, manifest)
    synthetic = manifest.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise DataError(f"'synthetic' in {folder / MANIFEST} must be true or false, not {synthetic!r}.")
    return DatasetInfo(
        root=folder,
        layout=layout,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=classes,
        samples=samples,
        description=str(manifest.get("description") or generated),
        synthetic=synthetic,
        categories=categories,
        name=str(manifest.get("name") or folder.name),
        class_names=class_names or default_class_names(classes),
        fingerprint=data_fingerprint(samples, in_channels),
    )


def default_class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == 2:
        return ("background", "lesion")
    return ("background", *(f"class {number}" for number in range(1, num_classes)))
