"""The networks the trial can train and compare, built from a JSON-serialisable description.

A checkpoint stores ``architecture_config(...)`` next to its weights: the description is complete (defaults filled
in), so ``build_model`` rebuilds exactly the network that was trained even if a default changes later.

- ``combined``: the seed paper's U-Net / Kite-Net (:class:`ai_engine.network.CombinedNet`).
- ``kiunet``: the same class with the U-Net extras switched off (no dilated branches, no squeeze-and-excitation,
  full U-Net decoder, no attention gates) but Kite branch and fusion on: the KiU-Net baseline.
- ``unet``, ``attention_unet``, ``basic_unet``: MONAI's baselines with widths comparable to the combined model
  (16 channels at full resolution doubling to 128, three down-samplings; BasicUNet needs its five levels).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from monai.networks.nets import AttentionUnet, BasicUNet, UNet
from torch import Tensor, nn

from ai_engine.network import CombinedNet, CombinedNetConfig

ARCHITECTURES: tuple[str, ...] = ("combined", "unet", "attention_unet", "basic_unet", "kiunet")

# the settings that make a CombinedNet the KiU-Net baseline; options may not change them
KIUNET_SWITCHES: dict[str, Any] = {
    "dilations": [1],
    "squeeze_excitation": False,
    "partial_decoder": False,
    "attention_gates": False,
    "fusion": True,
}

BASELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "unet": {
        "channels": [16, 32, 64, 128],
        "strides": [2, 2, 2],
        "num_res_units": 2,
        "norm": "instance",
        "dropout": 0.0,
    },
    "attention_unet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "dropout": 0.0},
    "basic_unet": {"features": [16, 32, 64, 128, 256, 16], "norm": ["instance", {"affine": True}], "dropout": 0.0},
}
# options whose value must be a list of whole numbers of at least 1
_WIDTH_OPTIONS: tuple[str, ...] = ("channels", "strides", "features")

_SHARED_KEYS: tuple[str, ...] = ("spatial_dims", "in_channels", "out_channels", "num_categories")
_CONFIG_KEYS: tuple[str, ...] = ("arch", *_SHARED_KEYS, "options")


class ArchitectureError(ValueError):
    """A network description that names an unknown architecture or settings it does not accept."""


def architecture_config(
    arch: str,
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    num_categories: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """The complete, JSON-serialisable description of one network; ``options`` override the architecture's
    defaults (CombinedNetConfig fields for "combined"/"kiunet", MONAI constructor arguments for the baselines)."""
    if arch not in ARCHITECTURES:
        raise ArchitectureError(f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    shared = {
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "num_categories": num_categories,
    }
    _check_shared(shared)
    options = _json_values(arch, options)
    if arch in ("combined", "kiunet"):
        full_options = _combined_options(arch, shared, options)
    else:
        full_options = _baseline_options(arch, shared, options)
    return {"arch": arch, **shared, "options": full_options}


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The untrained network described by ``config`` (as made by :func:`architecture_config`, possibly after a
    JSON round trip). Every network maps (B, in_channels, *S) to logits (B, out_channels, *S) for any size S."""
    if not isinstance(config, Mapping):
        raise ArchitectureError(f"A network description must be a mapping, got {type(config).__name__}.")
    unknown = sorted(map(str, set(config) - set(_CONFIG_KEYS)))
    if unknown:
        raise ArchitectureError(f"Unknown key(s) in the network description: {', '.join(unknown)}.")
    missing = [key for key in ("arch", "spatial_dims", "in_channels", "out_channels") if key not in config]
    if missing:
        raise ArchitectureError(f"The network description lacks {', '.join(missing)}.")
    options = config.get("options", {})
    if not isinstance(options, Mapping):
        raise ArchitectureError(f"The network description's options must be a mapping, got {type(options).__name__}.")
    misplaced = sorted(map(str, set(options) & set(_CONFIG_KEYS)))
    if misplaced:
        raise ArchitectureError(f"{', '.join(misplaced)} belong(s) at the top of the description, not in its options.")
    described = architecture_config(
        config["arch"],
        spatial_dims=config["spatial_dims"],
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        num_categories=config.get("num_categories", 0),
        **options,
    )
    arch, options = described["arch"], described["options"]
    if arch in ("combined", "kiunet"):
        return CombinedNet(CombinedNetConfig.from_dict({**_shared(described), **options}))
    return _build_baseline(arch, described, options)


def count_parameters(model: nn.Module) -> int:
    """All weights of the model, trainable or not (what a checkpoint stores, apart from normalisation buffers)."""
    return sum(parameter.numel() for parameter in model.parameters())


class DivisiblePadded(nn.Module):
    """Runs a network that needs sizes divisible by ``divisor`` on any size: pads with zeros, split evenly between
    both sides as MONAI's DivisiblePad does, and crops the logits back to the input's size."""

    def __init__(self, network: nn.Module, divisor: int) -> None:
        super().__init__()
        self.network = network
        self.divisor = divisor

    def forward(self, x: Tensor) -> Tensor:
        spatial = x.shape[2:]
        padded = [math.ceil(edge / self.divisor) * self.divisor for edge in spatial]
        if padded == list(spatial):
            result: Tensor = self.network(x)
            return result
        before = [(new - old) // 2 for new, old in zip(padded, spatial, strict=True)]
        padding: list[int] = []  # F.pad lists the last axis first: (W_before, W_after, H_before, H_after, ...)
        for axis in reversed(range(len(spatial))):
            padding += [before[axis], padded[axis] - spatial[axis] - before[axis]]
        logits: Tensor = self.network(F.pad(x, padding))
        crop = tuple(slice(start, start + edge) for start, edge in zip(before, spatial, strict=True))
        return logits[(slice(None), slice(None), *crop)]


def _combined_options(arch: str, shared: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    if arch == "kiunet":
        fixed = sorted(key for key in options if key in KIUNET_SWITCHES and options[key] != KIUNET_SWITCHES[key])
        if fixed:
            raise ArchitectureError(
                f"kiunet is the combined network with {', '.join(fixed)} fixed; use arch 'combined' to change them."
            )
        options = {**options, **KIUNET_SWITCHES}
    try:
        network_config = CombinedNetConfig.from_dict({**shared, **options})
    except ValueError as error:
        raise ArchitectureError(f"Invalid {arch} settings: {error}") from error
    return {key: value for key, value in network_config.to_dict().items() if key not in _SHARED_KEYS}


def _baseline_options(arch: str, shared: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    if shared["num_categories"]:
        raise ArchitectureError(
            f"{arch} has no image-level category head; num_categories > 0 needs arch 'combined' or 'kiunet'."
        )
    defaults = BASELINE_DEFAULTS[arch]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ArchitectureError(
            f"Unknown {arch} option(s): {', '.join(unknown)}. Known options: {', '.join(sorted(defaults))}."
        )
    for name in _WIDTH_OPTIONS:
        value = options.get(name)
        if value is not None and not (
            isinstance(value, list) and value and all(_is_whole(item) and item >= 1 for item in value)
        ):
            raise ArchitectureError(
                f"{arch} option {name} must be a list of whole numbers of at least 1, got {value!r}."
            )
    return {**defaults, **options}


def _build_baseline(arch: str, described: Mapping[str, Any], options: Mapping[str, Any]) -> nn.Module:
    dims, in_channels, out_channels = described["spatial_dims"], described["in_channels"], described["out_channels"]
    try:
        if arch == "unet":
            network: nn.Module = UNet(dims, in_channels, out_channels, **options)
            divisor = math.prod(options["strides"])
        elif arch == "attention_unet":
            network = AttentionUnet(dims, in_channels, out_channels, **options)
            divisor = math.prod(options["strides"])
        else:
            # BasicUNet pads its own up-sampled features where an odd edge was pooled, so it takes any size as is
            return BasicUNet(dims, in_channels, out_channels, **options)
    except (ValueError, TypeError, AssertionError, LookupError) as error:
        raise ArchitectureError(f"Cannot build {arch} from options {dict(options)}: {error}") from error
    return DivisiblePadded(network, divisor)


def _shared(described: Mapping[str, Any]) -> dict[str, Any]:
    return {key: described[key] for key in _SHARED_KEYS}


def _json_values(arch: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as they will read back from JSON (tuples become lists), or an error for what JSON cannot hold."""
    try:
        result: dict[str, Any] = json.loads(json.dumps(dict(options)))
    except (TypeError, ValueError) as error:
        raise ArchitectureError(
            f"{arch} options must be plain numbers, strings, lists and booleans: {error}"
        ) from error
    return result


def _check_shared(shared: Mapping[str, Any]) -> None:
    if shared["spatial_dims"] not in (2, 3) or not _is_whole(shared["spatial_dims"]):
        raise ArchitectureError(f"spatial_dims must be 2 (images) or 3 (volumes), got {shared['spatial_dims']!r}.")
    for name in ("in_channels", "out_channels"):
        if not _is_whole(shared[name]) or shared[name] < 1:
            raise ArchitectureError(f"{name} must be a whole number of at least 1, got {shared[name]!r}.")
    if not _is_whole(shared["num_categories"]) or shared["num_categories"] < 0:
        raise ArchitectureError(f"num_categories must be 0 or more, got {shared['num_categories']!r}.")


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
