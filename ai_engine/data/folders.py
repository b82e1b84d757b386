"""2D data sets in the Kvasir-SEG / CVC layout: ROOT/images/ and ROOT/masks/
holding pictures with matching names (a mask may be a PNG for a JPEG image,
and may carry a _mask or _segmentation suffix)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_engine.data.classes import check_mask_values, infer_num_classes
from ai_engine.data.problems import Problems, some
from ai_engine.data.reading import (
    IMAGE_SUFFIXES,
    LOSSY_SUFFIXES,
    read_mask_values,
    read_picture_header,
    relative_name,
)
from ai_engine.data.records import DataError, Sample

MASK_NAME_SUFFIXES = ("", "_mask", "_seg", "_segmentation", "_Segmentation")


@dataclass(frozen=True)
class FoundPairs:
    samples: tuple[Sample, ...]
    in_channels: int
    num_classes: int


def pictures_by_stem(folder: Path, problems: Problems) -> dict[str, Path]:
    """Picture files by name without extension; hidden files (.DS_Store,
    ._name from macOS) and other file types are ignored."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            found[path.stem].append(path)
    for stem, paths in found.items():
        if len(paths) > 1:
            problems.add(f"{some([relative_name(path, folder.parent) for path in paths])} share the name {stem!r}.")
    return {stem: paths[0] for stem, paths in found.items()}


def match_masks(images: dict[str, Path], masks: dict[str, Path], root: Path, problems: Problems) -> list[Sample]:
    samples: list[Sample] = []
    used: set[str] = set()
    without_mask: list[str] = []
    for stem, image in images.items():
        mask_stem = next((stem + suffix for suffix in MASK_NAME_SUFFIXES if stem + suffix in masks), None)
        if mask_stem is None:
            without_mask.append(image.name)
            continue
        used.add(mask_stem)
        samples.append(Sample(name=stem, image=image, mask=masks[mask_stem]))
    without_image = [masks[stem].name for stem in masks if stem not in used]
    if without_mask:
        problems.add(f"{len(without_mask)} image(s) in {root / 'images'} have no mask in masks/: {some(without_mask)}.")
    if without_image:
        problems.add(
            f"{len(without_image)} mask(s) in {root / 'masks'} have no image in images/: {some(without_image)}."
        )
    return samples


def check_channels(channels: dict[Path, int], root: Path, problems: Problems) -> int:
    """All images grey or all colour; the first image decides when they agree."""
    by_count: dict[int, list[str]] = defaultdict(list)
    for path, count in channels.items():
        by_count[count].append(relative_name(path, root))
    if len(by_count) > 1:
        kinds = "; ".join(
            f"{len(names)} {'grey' if count == 1 else 'colour (RGB)'}, e.g. {some(names, 3)}"
            for count, names in sorted(by_count.items())
        )
        problems.add(f"images have mixed channel counts ({kinds}); convert them all to grey or all to RGB.")
    return next(iter(channels.values()), 1)


def scan_folder_pairs(root: Path, *, num_classes: int | None) -> FoundPairs:
    problems = Problems(root)
    if not (root / "masks").is_dir():
        raise DataError(f"{root} has an images/ folder but no masks/ folder beside it.")
    images = pictures_by_stem(root / "images", problems)
    if not images:
        raise DataError(f"no images found in {root / 'images'} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    masks = pictures_by_stem(root / "masks", problems)
    samples = match_masks(images, masks, root, problems)

    channels: dict[Path, int] = {}
    mask_values: list[tuple[str, np.ndarray, bool]] = []
    for sample in samples:
        with problems.collecting():
            image_size, channels[sample.image] = read_picture_header(sample.image)
            mask_size, _ = read_picture_header(sample.mask)
            if mask_size != image_size:
                raise DataError(
                    f"mask {relative_name(sample.mask, root)} is {mask_size[0]}x{mask_size[1]} but its image "
                    f"{relative_name(sample.image, root)} is {image_size[0]}x{image_size[1]} (width x height)."
                )
            values = np.unique(read_mask_values(sample.mask))
            lossy = sample.mask.suffix.lower() in LOSSY_SUFFIXES
            mask_values.append((relative_name(sample.mask, root), values, lossy))
    in_channels = check_channels(channels, root, problems)
    problems.raise_if_any()
    classes = num_classes if num_classes is not None else infer_num_classes(mask_values)
    for message in check_mask_values(mask_values, classes):
        problems.add(message)
    problems.raise_if_any()
    return FoundPairs(samples=tuple(samples), in_channels=in_channels, num_classes=classes)
