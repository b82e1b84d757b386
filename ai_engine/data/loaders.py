"""Training and validation loaders built from MONAI dictionary transforms.

Augmentation is reproducible without touching global random state: the
sampler draws, from its own generator seeded once, the order of the samples
and one seed per sample; the dataset seeds the MONAI Compose with it just
before transforming that sample. The same seed therefore gives the same
batches in every run, whatever the number of worker processes, while each
epoch still sees new augmentations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandShiftIntensityd,
    Resized,
    SpatialPadd,
)
from torch.utils.data import DataLoader, Dataset, Sampler

from ai_engine.data.reading import load_sample
from ai_engine.data.records import DatasetInfo, Sample

KEYS = ("image", "label")
UNKNOWN_CATEGORY = -1
# The whole validation volume is padded so that every downsampling level of a
# network (3 halvings) divides it evenly.
VOLUME_DIVISOR = 8
LARGEST_SEED = 2**31 - 1


def split_samples(
    samples: Sequence[Sample], *, validation_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(training, validation): a seeded shuffle of the samples taken in name
    order, so the split does not depend on the order they were listed in; at
    least one sample on each side when there are two or more."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be between 0 and 1, not {validation_fraction}.")
    ordered = sorted(samples, key=lambda sample: sample.name)
    if len(ordered) < 2:
        return ordered, []
    shuffled = [ordered[index] for index in np.random.default_rng(seed).permutation(len(ordered))]
    validation_count = min(max(round(len(ordered) * validation_fraction), 1), len(ordered) - 1)
    validation = sorted(shuffled[:validation_count], key=lambda sample: sample.name)
    training = sorted(shuffled[validation_count:], key=lambda sample: sample.name)
    return training, validation


def plain_tensors() -> EnsureTyped:
    """Plain tensors (no MONAI metadata) of the documented dtypes."""
    return EnsureTyped(keys=KEYS, data_type="tensor", dtype=(torch.float32, torch.int64), track_meta=False)


def intensity_augmentation() -> list[Any]:
    return [
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
        RandGaussianNoised(keys="image", std=0.02, prob=0.3),
    ]


def transforms_2d(image_size: int, train: bool) -> Compose:
    size = (image_size, image_size)
    steps: list[Any] = [
        Resized(keys=KEYS, spatial_size=size, mode=("bilinear", "nearest"), anti_aliasing=(True, False)),
    ]
    if train:
        steps += [
            RandFlipd(keys=KEYS, spatial_axis=0, prob=0.5),
            RandFlipd(keys=KEYS, spatial_axis=1, prob=0.5),
            RandRotate90d(keys=KEYS, prob=0.5, max_k=3),
            RandAffined(
                keys=KEYS,
                prob=0.5,
                rotate_range=np.pi / 12,
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            *intensity_augmentation(),
        ]
    return Compose([*steps, plain_tensors()])


def transforms_3d(patch_size: int, train: bool) -> Compose:
    if not train:
        return Compose([DivisiblePadd(keys=KEYS, k=VOLUME_DIVISOR), plain_tensors()])
    patch = (patch_size,) * 3
    steps: list[Any] = [
        SpatialPadd(keys=KEYS, spatial_size=patch),
        # Half the patches centred on a lesion voxel: lesions are a small
        # fraction of a volume and would otherwise rarely be seen.
        RandCropByPosNegLabeld(keys=KEYS, label_key="label", spatial_size=patch, pos=1, neg=1, num_samples=1),
        RandFlipd(keys=KEYS, spatial_axis=0, prob=0.5),
        RandFlipd(keys=KEYS, spatial_axis=1, prob=0.5),
        RandFlipd(keys=KEYS, spatial_axis=2, prob=0.5),
        RandRotate90d(keys=KEYS, prob=0.5, max_k=3, spatial_axes=(0, 1)),
        *intensity_augmentation(),
    ]
    return Compose([*steps, plain_tensors()])


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields (sample index, augmentation seed); shuffled when training."""

    def __init__(self, count: int, *, shuffle: bool, seed: int) -> None:
        self.count = count
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.count, generator=self.generator) if self.shuffle else torch.arange(self.count)
        seeds = torch.randint(0, LARGEST_SEED, (self.count,), generator=self.generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class SegmentationDataset(Dataset[dict[str, Any]]):
    def __init__(self, info: DatasetInfo, samples: Sequence[Sample], transform: Compose) -> None:
        self.info = info
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        sample = self.samples[index]
        image, mask = load_sample(sample, self.info)
        self.transform.set_random_state(seed=seed)
        item = self.transform({"image": image, "label": mask[None].astype(np.float32)})
        if isinstance(item, list):  # patch croppers return a list of num_samples patches
            item = item[0]
        return {
            "image": item["image"],
            "label": item["label"],
            "category": UNKNOWN_CATEGORY if sample.category is None else sample.category,
            "name": sample.name,
        }


def make_loader(
    info: DatasetInfo,
    samples: Sequence[Sample],
    *,
    image_size: int,
    train: bool,
    batch_size: int,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader[dict[str, Any]]:
    """Batches of {"image": float (B, C, *S), "label": long (B, 1, *S),
    "category": long (B,) with -1 where unknown, "name": list[str]}.

    2D: every image resized to image_size x image_size; training adds random
    flips, quarter turns, a small rotation/zoom, intensity shift, contrast
    and noise. 3D training: patches of image_size³ (lesion-centred half of the
    time, volumes padded when smaller); 3D validation: each whole volume,
    padded to a multiple of 8, one per batch whatever batch_size says (the
    caller runs sliding-window inference on it)."""
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"image_size and batch_size must be positive (got {image_size}, {batch_size}).")
    if info.layout == "2d":
        transform = transforms_2d(image_size, train)
    else:
        transform = transforms_3d(image_size, train)
        batch_size = batch_size if train else 1
    dataset = SegmentationDataset(info, samples, transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededSampler(len(dataset), shuffle=train, seed=seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
