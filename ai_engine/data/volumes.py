"""3D data sets as NIfTI in the Medical Segmentation Decathlon layout
(dataset.json with a "training" list) or the nnU-Net v2 layout (dataset.json
with "channel_names" and "file_ending"; imagesTr/CASE_0000.nii.gz …,
labelsTr/CASE.nii.gz)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ai_engine.data.classes import check_mask_values, infer_num_classes
from ai_engine.data.problems import Problems, some
from ai_engine.data.reading import (
    NIFTI_SUFFIXES,
    format_values,
    is_nifti,
    nifti_stem,
    open_volume,
    read_image_volume,
    read_volume,
    relative_name,
)
from ai_engine.data.records import DataError, Sample

NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class FoundVolumes:
    samples: tuple[Sample, ...]
    in_channels: int
    num_classes: int


def msd_samples(root: Path, manifest: dict[str, Any], problems: Problems) -> list[Sample]:
    training = manifest.get("training")
    if not isinstance(training, list) or not training:
        raise DataError(f"no images found in {root}: the 'training' list of dataset.json is empty.")
    samples: list[Sample] = []
    for number, entry in enumerate(training):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry.get("label"):
            problems.add(f"entry {number} of 'training' in dataset.json needs an 'image' and a 'label' path.")
            continue
        image, label = (root / entry["image"]).resolve(), (root / entry["label"]).resolve()
        missing = [str(entry[key]) for key, path in (("image", image), ("label", label)) if not path.is_file()]
        if missing:
            problems.add(f"dataset.json lists files that do not exist: {some(missing)}.")
            continue
        samples.append(Sample(name=nifti_stem(image), image=image, mask=label))
    return samples


def nnunet_samples(root: Path, manifest: dict[str, Any], problems: Problems) -> tuple[list[Sample], int]:
    ending = str(manifest.get("file_ending", ".nii.gz"))
    if ending.lower() not in NIFTI_SUFFIXES:
        raise DataError(f"dataset.json in {root} has file_ending {ending!r}; only NIfTI (.nii.gz, .nii) is read.")
    channel_names = manifest.get("channel_names") or manifest.get("modality") or {"0": "image"}
    in_channels = len(channel_names)
    images_folder, labels_folder = root / "imagesTr", root / "labelsTr"
    for folder in (images_folder, labels_folder):
        if not folder.is_dir():
            raise DataError(f"no images found in {root}: the folder {folder.name}/ is missing.")
    cases_with_images: dict[str, set[int]] = defaultdict(set)
    for path in sorted(images_folder.glob(f"*{ending}")):
        match = NNUNET_CHANNEL.match(path.name[: -len(ending)])
        if match and not path.name.startswith("."):
            cases_with_images[match["case"]].add(int(match["channel"]))
    labels = {
        path.name[: -len(ending)]: path
        for path in sorted(labels_folder.glob(f"*{ending}"))
        if not path.name.startswith(".")
    }
    if not cases_with_images:
        raise DataError(f"no images found in {images_folder} (expected CASE_0000{ending}).")
    without_label = sorted(set(cases_with_images) - set(labels))
    without_image = sorted(set(labels) - set(cases_with_images))
    if without_label:
        problems.add(f"{len(without_label)} case(s) in imagesTr/ have no label in labelsTr/: {some(without_label)}.")
    if without_image:
        problems.add(f"{len(without_image)} label(s) in labelsTr/ have no image in imagesTr/: {some(without_image)}.")
    expected = set(range(in_channels))
    incomplete = [case for case, channels in cases_with_images.items() if case in labels and channels != expected]
    if incomplete:
        problems.add(
            f"dataset.json declares {in_channels} channel(s) (_0000 … _{in_channels - 1:04d}) but these cases "
            f"have other files: {some(sorted(incomplete))}."
        )
    samples = [
        Sample(name=case, image=images_folder / f"{case}_0000{ending}", mask=labels[case])
        for case in sorted(cases_with_images)
        if case in labels and case not in incomplete
    ]
    return samples, in_channels


def check_volume(sample: Sample, in_channels: int, root: Path) -> tuple[int, np.ndarray]:
    """Channel count and the label's values of one case, after checking that
    image and label agree in shape and that the image holds only finite numbers."""
    label_header = open_volume(sample.mask)
    label_shape = tuple(int(size) for size in label_header.shape)
    image = read_image_volume(sample, in_channels)  # (C, X, Y, Z)
    image_name, label_name = relative_name(sample.image, root), relative_name(sample.mask, root)
    if len(label_shape) != 3 and not (len(label_shape) == 4 and label_shape[3] == 1):
        raise DataError(f"label {label_name} has shape {label_shape}; a label volume must be 3D.")
    if tuple(image.shape[1:]) != label_shape[:3]:
        raise DataError(
            f"image {image_name} has shape {tuple(image.shape[1:])} but its label {label_name} has {label_shape[:3]}."
        )
    if not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise DataError(f"image {image_name} holds {bad} NaN or infinite voxel(s).")
    label = read_volume(sample.mask)
    values = np.unique(label)
    if not np.isfinite(values).all() or not (values == np.round(values)).all():
        fractional = [float(value) for value in values if not np.isfinite(value) or value != round(value)]
        raise DataError(f"label {label_name} holds values that are not class numbers: {format_values(fractional)}.")
    return int(image.shape[0]), values.astype(np.int64)


def scan_volumes(root: Path, manifest: dict[str, Any], *, num_classes: int | None) -> FoundVolumes:
    problems = Problems(root)
    if "training" in manifest:
        samples = msd_samples(root, manifest, problems)
        declared = manifest.get("modality") or manifest.get("channel_names")
        in_channels = len(declared) if isinstance(declared, dict) and declared else 0
    else:
        samples, in_channels = nnunet_samples(root, manifest, problems)
    not_nifti = [relative_name(path, root) for sample in samples for path in (sample.image, sample.mask)]
    not_nifti = [name for name in not_nifti if not is_nifti(Path(name))]
    if not_nifti:
        raise DataError(f"only NIfTI files (.nii.gz, .nii) are read; these are not: {some(not_nifti)}.")

    channels: dict[str, int] = {}
    mask_values: list[tuple[str, np.ndarray, bool]] = []
    for sample in samples:
        with problems.collecting():
            channels[sample.name], values = check_volume(sample, in_channels or 1, root)
            mask_values.append((relative_name(sample.mask, root), values, False))
    counts = sorted(set(channels.values()))
    if in_channels and any(count != in_channels for count in counts):
        odd = [name for name, count in channels.items() if count != in_channels]
        problems.add(
            f"dataset.json declares {in_channels} channel(s) but these images have another count: {some(odd)}."
        )
    elif len(counts) > 1:
        problems.add(f"images have mixed channel counts {counts}: {some(sorted(channels))}.")
    problems.raise_if_any()
    classes = num_classes if num_classes is not None else infer_num_classes(mask_values)
    for message in check_mask_values(mask_values, classes):
        problems.add(message)
    problems.raise_if_any()
    return FoundVolumes(samples=tuple(samples), in_channels=in_channels or counts[0], num_classes=classes)
