"""Checkpoints: a saved network comes back bit for bit, and a file that was
altered, lost its side file, is not ours or holds another network's weights
is refused with a message saying which."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ai_engine.architectures import architecture_config, build_model
from ai_engine.checkpoint import (
    FORMAT,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    side_file_path,
)

TINY_COMBINED: dict[str, Any] = {"unet_widths": (8, 16, 32), "kite_widths": (8,)}


def tiny_architecture(arch: str = "combined", **extra: Any) -> dict[str, Any]:
    options = TINY_COMBINED if arch in ("combined", "kiunet") else {}
    return architecture_config(arch, spatial_dims=2, in_channels=1, out_channels=2, **options, **extra)


def saved(path: Path, architecture: dict[str, Any], model: nn.Module | None = None) -> str:
    torch.manual_seed(0)
    return save_checkpoint(
        path,
        model=model if model is not None else build_model(architecture),
        architecture=architecture,
        training={"epochs": 1, "seed": 0},
        metrics={"dice": 0.5},
        preprocessing={"image_size": 32, "in_channels": 1, "spatial_dims": 2},
        categories=("benign", "malignant"),
    )


@pytest.fixture
def checkpoint_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    saved(path, tiny_architecture())
    return path


def test_it_gives_back_a_network_with_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    architecture = tiny_architecture(num_categories=2)
    model = build_model(architecture).eval()
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        before = model(image)
    digest = saved(tmp_path / "model.pt", architecture, model)

    checkpoint = load_checkpoint(tmp_path / "model.pt", expected_arch="combined")
    restored = checkpoint.build_model()
    with torch.no_grad():
        after = restored(image)

    assert not restored.training
    assert torch.equal(before, after)
    assert checkpoint.sha256 == digest
    assert checkpoint.architecture == json.loads(json.dumps(architecture))
    assert checkpoint.categories == ("benign", "malignant")
    assert checkpoint.metrics == {"dice": 0.5}
    assert checkpoint.preprocessing["image_size"] == 32
    assert all(
        tensor.dtype != torch.float16 and tensor.device.type == "cpu" for tensor in checkpoint.state_dict.values()
    )


def test_its_side_file_is_in_sha256sum_format(checkpoint_file: Path) -> None:
    side_file = side_file_path(checkpoint_file)
    assert side_file.name == "model.pt.sha256"
    text = side_file.read_text()
    expected = hashlib.sha256(checkpoint_file.read_bytes()).hexdigest()
    assert text == f"{expected}  model.pt\n"
    assert file_sha256(checkpoint_file) == expected
    assert re.fullmatch(r"[0-9a-f]{64}  model\.pt\n", text)


def test_it_leaves_no_temporary_files(checkpoint_file: Path) -> None:
    assert sorted(path.name for path in checkpoint_file.parent.iterdir()) == ["model.pt", "model.pt.sha256"]


def test_it_refuses_a_file_with_a_flipped_byte(checkpoint_file: Path) -> None:
    data = bytearray(checkpoint_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupted or altered: sha256 [0-9a-f]{64}, expected [0-9a-f]{64}"):
        load_checkpoint(checkpoint_file)


def test_it_refuses_a_file_without_its_side_file(checkpoint_file: Path) -> None:
    side_file_path(checkpoint_file).unlink()
    with pytest.raises(CheckpointError, match=r"no side file model\.pt\.sha256"):
        load_checkpoint(checkpoint_file)
    # Explicitly unverified loading still reports the digest it computed.
    assert load_checkpoint(checkpoint_file, verify=False).sha256 == file_sha256(checkpoint_file)


def test_it_refuses_a_malformed_side_file(checkpoint_file: Path) -> None:
    side_file_path(checkpoint_file).write_text("not a digest\n")
    with pytest.raises(CheckpointError, match=r"side file .* is malformed"):
        load_checkpoint(checkpoint_file)


def test_it_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="No checkpoint file at"):
        load_checkpoint(tmp_path / "absent.pt")


def test_it_refuses_another_architecture_than_expected(checkpoint_file: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a 'combined' network, not the expected 'unet'"):
        load_checkpoint(checkpoint_file, expected_arch="unet")


def test_it_refuses_weights_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    # Declares a combined network but carries a U-Net's weights.
    saved(path, tiny_architecture(), model=build_model(tiny_architecture("unet")))
    with pytest.raises(
        CheckpointError, match=r"do not fit its 'combined' architecture: weights \d+ missing .*unexpected"
    ):
        load_checkpoint(path)


def write_with_side_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    side_file_path(path).write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


def test_it_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    write_with_side_file(path, b"these are not weights\n" * 10)
    with pytest.raises(CheckpointError, match="is not a Consilium segmentation checkpoint"):
        load_checkpoint(path)


def test_it_refuses_plain_weights_without_a_description(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model(tiny_architecture("unet")).state_dict(), path)
    write_with_side_file(path, path.read_bytes())
    with pytest.raises(CheckpointError, match="is not a Consilium segmentation checkpoint"):
        load_checkpoint(path)


def test_it_refuses_another_format_version(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": "consilium-segmentation/99", "metadata": "{}", "state_dict": {}}, path)
    write_with_side_file(path, path.read_bytes())
    with pytest.raises(CheckpointError, match=f"format 'consilium-segmentation/99'; this version reads '{FORMAT}'"):
        load_checkpoint(path)


class Payload:
    """An object whose unpickling would create a file: loading must not run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_it_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "hostile.pt"
    torch.save({"format": FORMAT, "metadata": Payload(marker), "state_dict": {}}, path)
    write_with_side_file(path, path.read_bytes())
    with pytest.raises(CheckpointError, match="is not a Consilium segmentation checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_it_refuses_to_save_a_description_that_is_not_plain_data(tmp_path: Path) -> None:
    architecture = tiny_architecture("unet")
    with pytest.raises(CheckpointError, match="plain JSON data without NaN"):
        save_checkpoint(
            tmp_path / "model.pt",
            model=build_model(architecture),
            architecture=architecture,
            training={},
            metrics={"dice": math.nan},
            preprocessing={},
        )
    assert not list(tmp_path.iterdir())
