"""The settings of the combined U-Net / Kite-Net, as a frozen, JSON-serialisable value.

A checkpoint stores ``CombinedNetConfig.to_dict()`` next to its weights, so the network that produced a reading can be
rebuilt exactly; ``from_dict`` therefore rejects anything it does not understand instead of guessing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NORMS: tuple[str, ...] = ("instance", "batch")
_WIDTH_FIELDS: tuple[str, ...] = ("unet_widths", "dilations", "kite_widths")
_POSITIVE_FIELDS: tuple[str, ...] = ("in_channels", "out_channels")
_SWITCH_FIELDS: tuple[str, ...] = (
    "squeeze_excitation",
    "partial_decoder",
    "kite_inplane_only",
    "attention_gates",
    "fusion",
)


@dataclass(frozen=True)
class CombinedNetConfig:
    """Everything that shapes the network; the defaults are the small 2D model shipped with the trial.

    The default Kite branch has one level: on a CPU a second level (features at 4x the input's size) made inference
    at 256x256 3-4x slower than MONAI's AttentionUnet whatever its widths, while one level costs under 2x. Use
    ``kite_widths=(8, 16)`` or deeper where a GPU is available.

    Instance normalisation by default: 3D patches are trained one volume at a time, where batch statistics are
    meaningless, and each image is normalised on its own, so the gain settings of different ultrasound machines
    and cameras matter less and training and inference behave alike.
    """

    spatial_dims: int = 2  # 2 images, 3 volumes
    in_channels: int = 1  # 1 grey ultrasound, 3 RGB colposcopy
    out_channels: int = 2  # classes including background; the network returns raw logits
    unet_widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per U-Net level; depth = length
    dilations: tuple[int, ...] = (1, 2, 4)  # context aggregation: 1 is the normal convolution
    squeeze_excitation: bool = True
    partial_decoder: bool = True  # False: full U-Net decoder with skips at every level
    kite_widths: tuple[int, ...] = (8,)  # channels per Kite level; depth = length; () removes the Kite branch
    kite_inplane_only: bool = True  # 3D only: the Kite branch enlarges (D, H, W) to (D, 2H, 2W)
    attention_gates: bool = True  # on Kite skip connections and where the Kite output joins the U-Net output
    fusion: bool = True  # cross residual fusion between the branches at each encoder level
    num_categories: int = 0  # > 0: image-level category logits from the deepest U-Net level
    norm: str = "instance"  # or "batch"

    def __post_init__(self) -> None:
        for name in _WIDTH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):  # JSON gives lists; the frozen config keeps hashable tuples
                object.__setattr__(self, name, tuple(value))
        _validate(self)

    @property
    def unet_depth(self) -> int:
        return len(self.unet_widths)

    @property
    def kite_depth(self) -> int:
        return len(self.kite_widths)

    @property
    def minimum_input_size(self) -> int:
        """Smallest edge length (pixels or voxels) that leaves the deepest U-Net level at least 2 wide."""
        return 2 ** (self.unet_depth - 1) + 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in _WIDTH_FIELDS:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CombinedNetConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"Network configuration must be a mapping of settings, got {type(data).__name__}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            listed = ", ".join(map(str, unknown))
            raise ValueError(f"Unknown network setting(s): {listed}. Known settings: {', '.join(sorted(known))}.")
        values = dict(data)
        for name in _WIDTH_FIELDS:
            if name in values and isinstance(values[name], list | tuple):
                values[name] = tuple(values[name])
        return cls(**values)


def _validate(config: CombinedNetConfig) -> None:
    if not _is_integer(config.spatial_dims) or config.spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {config.spatial_dims!r}.")
    for name in _POSITIVE_FIELDS:
        value = getattr(config, name)
        if not _is_integer(value) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if not _is_integer(config.num_categories) or config.num_categories < 0:
        raise ValueError(f"num_categories must be 0 (no image-level head) or more, got {config.num_categories!r}.")
    for name in _WIDTH_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, tuple) or not all(_is_integer(item) and item >= 1 for item in value):
            raise ValueError(f"{name} must be a list of whole numbers of at least 1, got {value!r}.")
    for name in _SWITCH_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}.")
    minimum_depth = 3 if config.partial_decoder else 2
    if len(config.unet_widths) < minimum_depth:
        reason = "the partial decoder aggregates the three deepest levels" if config.partial_decoder else "a U-Net"
        raise ValueError(
            f"unet_widths needs at least {minimum_depth} levels ({reason}), got {list(config.unet_widths)}."
        )
    if not config.dilations:
        raise ValueError("dilations must list at least one dilation rate (1 is the normal convolution).")
    if len(set(config.dilations)) != len(config.dilations):
        raise ValueError(f"dilations must not repeat a rate, got {list(config.dilations)}.")
    if config.norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {config.norm!r}.")


def _is_integer(value: object) -> bool:
    # bool is a subclass of int, but `true` as a channel count is a mistake in the file, not a number
    return isinstance(value, int) and not isinstance(value, bool)
