"""Segmentation checkpoints: one file of weights and the facts needed to
rebuild and trust them, plus a `sha256sum`-format side file.

The file is written by `torch.save` and read by `torch.load(weights_only=True)`
only, so loading a checkpoint never runs code from it. Everything that is not
a weight (architecture, training description, metrics, preprocessing,
categories) is stored as one JSON string: it must be plain data, and a value
that is not (a Path, a NaN) is refused at save time rather than discovered by
whoever loads it.

Why the side file: the trial records which model produced each AI opinion by
its sha256; a checkpoint whose bytes no longer match the recorded digest must
not be used silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ai_engine.architectures import ArchitectureError, build_model

FORMAT = "consilium-segmentation/1"
SIDE_FILE_SUFFIX = ".sha256"
# `sha256sum` writes "<hex>  <name>" (two spaces; "*" before the name in binary mode).
_SIDE_FILE_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_KEY_LIST_LIMIT = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be written, found, trusted or used."""


@dataclass(frozen=True)
class Checkpoint:
    architecture: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    training: dict[str, Any]
    metrics: dict[str, Any]
    preprocessing: dict[str, Any]
    categories: tuple[str, ...]
    sha256: str

    @property
    def arch(self) -> str:
        return str(self.architecture["arch"])

    def build_model(self) -> nn.Module:
        """The network with these weights (strictly: every weight present and
        used), in evaluation mode, on the CPU."""
        model = _build_architecture(self.architecture)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def side_file_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDE_FILE_SUFFIX)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    architecture: Mapping[str, Any],
    training: Mapping[str, Any],
    metrics: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    categories: tuple[str, ...] | list[str] = (),
) -> str:
    """Write the checkpoint and its side file, each atomically (a reader sees
    the old file or the new one, never half of one); return the sha256."""
    path = Path(path)
    if "arch" not in architecture:
        raise CheckpointError("The architecture description has no 'arch' key; it cannot be rebuilt from the file.")
    try:
        metadata = json.dumps(
            {
                "architecture": dict(architecture),
                "training": dict(training),
                "metrics": dict(metrics),
                "preprocessing": dict(preprocessing),
                "categories": [str(category) for category in categories],
            },
            allow_nan=False,
            sort_keys=True,
        )
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"The checkpoint description must be plain JSON data without NaN: {error}") from error
    payload = {"format": FORMAT, "metadata": metadata, "state_dict": _portable_state_dict(model)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda handle: torch.save(payload, handle))
    digest = file_sha256(path)
    line = f"{digest}  {path.name}\n".encode()
    _write_atomically(side_file_path(path), lambda handle: handle.write(line))
    return digest


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_arch: str | None = None,
    verify: bool = True,
) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint. With verify (the default)
    the file's sha256 must match its side file. The weights are checked
    against the architecture (names and shapes) before they are returned."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.")
    digest = file_sha256(path)
    if verify:
        expected = _read_side_file(path)
        if digest != expected:
            raise CheckpointError(
                f"Checkpoint {path} is corrupted or altered: sha256 {digest}, expected {expected} "
                f"(from {side_file_path(path).name})."
            )
    payload = _read_payload(path)
    architecture = payload["architecture"]
    arch = architecture.get("arch") if isinstance(architecture, dict) else None
    if not isinstance(arch, str):
        raise CheckpointError(f"{path} does not say which architecture its weights belong to.")
    if expected_arch is not None and arch != expected_arch:
        raise CheckpointError(f"Checkpoint {path} holds a {arch!r} network, not the expected {expected_arch!r}.")
    state_dict = payload["state_dict"]
    _check_state_dict(path, architecture, state_dict)
    return Checkpoint(
        architecture=architecture,
        state_dict=state_dict,
        training=dict(payload["training"]),
        metrics=dict(payload["metrics"]),
        preprocessing=dict(payload["preprocessing"]),
        categories=tuple(str(category) for category in payload["categories"]),
        sha256=digest,
    )


def _portable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights on the CPU, floating point ones as float32 in the standard
    memory layout, so that a checkpoint trained on a GPU in bf16 autocast with
    channels_last loads anywhere."""
    portable: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        portable[name] = tensor.contiguous().clone()
    return portable


def _write_atomically(path: Path, write: Any) -> None:
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise


def _read_side_file(path: Path) -> str:
    side_file = side_file_path(path)
    if not side_file.is_file():
        raise CheckpointError(
            f"Checkpoint {path} has no side file {side_file.name} with its sha256; "
            "without it the file cannot be verified."
        )
    lines = side_file.read_text(encoding="utf-8", errors="replace").splitlines()
    match = _SIDE_FILE_LINE.match(lines[0].strip()) if len(lines) == 1 else None
    if match is None:
        raise CheckpointError(
            f"The side file {side_file} is malformed: expected one line '<sha256 hex>  <file name>' "
            "as written by sha256sum."
        )
    return match.group(1).lower()


def _read_payload(path: Path) -> dict[str, Any]:
    not_ours = f"{path} is not a Consilium segmentation checkpoint"
    try:
        # weights_only: only tensors and plain containers are unpickled, never arbitrary objects.
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{not_ours} (it cannot be read as one: {_first_line(error)}).") from error
    if not isinstance(raw, dict) or "format" not in raw:
        raise CheckpointError(f"{not_ours}.")
    if raw["format"] != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {raw['format']!r}; this version reads {FORMAT!r}.")
    state_dict = raw.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"{not_ours}: it holds no valid weights.")
    try:
        metadata = json.loads(raw["metadata"])
        expected_keys = {"architecture", "training", "metrics", "preprocessing", "categories"}
        if not isinstance(metadata, dict) or not expected_keys <= metadata.keys():
            raise ValueError("missing entries")
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{not_ours}: its description is unreadable ({error}).") from error
    return {**metadata, "state_dict": state_dict}


def _build_architecture(architecture: Mapping[str, Any]) -> nn.Module:
    try:
        return build_model(architecture)
    except ArchitectureError as error:
        raise CheckpointError(f"The checkpoint's architecture cannot be built: {error}") from error


def _check_state_dict(path: Path, architecture: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Names and shapes against a freshly built network, so that a mismatch
    is reported in words rather than as a long load_state_dict trace."""
    expected = _build_architecture(architecture).state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    wrong_shape = sorted(
        name for name in expected.keys() & state_dict.keys() if expected[name].shape != state_dict[name].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} of another shape ({_some(wrong_shape)})")
    if problems:
        raise CheckpointError(
            f"The weights in {path} do not fit its {architecture['arch']!r} architecture: weights "
            + "; ".join(problems)
            + "."
        )


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_KEY_LIST_LIMIT])
    return shown + (", …" if len(names) > _KEY_LIST_LIMIT else "")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
