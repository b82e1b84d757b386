"""Where the network runs, and the GPU-only speed-ups (bf16 autocast,
channels_last for 2D). The CPU path is plain float32, so results on a
machine without a GPU are exact and reproducible."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch
from torch import nn

DEVICE_CHOICES = ("cpu", "cuda")


class DeviceError(ValueError):
    """A device that was asked for and is not there."""


def choose_device(requested: str | None) -> torch.device:
    """None picks the GPU when there is one, else the CPU; "cuda" (or
    "cuda:N") without a usable GPU is an error rather than a silent CPU run."""
    if requested is None or requested == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise DeviceError(f"Unknown device {requested!r}; use one of {', '.join(DEVICE_CHOICES)}.") from error
    if device.type not in DEVICE_CHOICES:
        raise DeviceError(f"Unknown device {requested!r}; use one of {', '.join(DEVICE_CHOICES)}.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("Device 'cuda' was requested but no CUDA GPU is available on this machine.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"Device {requested!r} was requested but only {torch.cuda.device_count()} GPU(s) exist.")
    return device


def autocast_context(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on the GPU (no loss scaling needed, unlike fp16);
    nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(device: torch.device, spatial_dims: int) -> bool:
    # channels_last is a 4-D (2D image) layout; 3D volumes keep the default layout.
    return device.type == "cuda" and spatial_dims == 2


def prepare_model_for_device(model: nn.Module, device: torch.device, *, spatial_dims: int | None = None) -> nn.Module:
    """The model on the device; 2D models in channels_last on the GPU. Without
    spatial_dims a model with any 5-D (3D convolution) weight counts as 3D."""
    if spatial_dims is None:
        spatial_dims = 3 if any(parameter.dim() == 5 for parameter in model.parameters()) else 2
    model = model.to(device)
    if uses_channels_last(device, spatial_dims):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def prepare_images_for_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch (B, C, *S) on the device, in the layout the model was prepared for."""
    images = images.to(device, non_blocking=True)
    if uses_channels_last(device, images.dim() - 2):
        images = images.contiguous(memory_format=torch.channels_last)
    return images
