"""manage.py train_model and evaluate_model: train on a few synthetic images,
evaluate the kept checkpoint into JSON; bad input stops with a clear message
and writes nothing."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from ai_engine.checkpoint import CheckpointError, load_checkpoint, side_file_path
from ai_engine.evaluation import JSON_KEYS
from ai_engine.synthetic import write_thyroid_ultrasound_2d
from tests.torch_threads import one_torch_thread

REQUIRED_KEYS = {"dice", "iou", "hd95", "lesion_sensitivity", "n_images", "per_image"}
TINY = ["--option", "unet_widths=[8,16,32]", "--option", "kite_widths=[8]"]


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def thyroid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_thyroid_ultrasound_2d(tmp_path_factory.mktemp("data") / "thyroid", count=6, size=40, seed=2)


@pytest.fixture(scope="module")
def trained(thyroid: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("models") / "combined.pt"
    output = command(
        "train_model",
        "--data",
        thyroid,
        "--arch",
        "combined",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--out",
        out,
        "--batch-size",
        "4",
        "--no-progress",
        *TINY,
    )
    return out, output


def command(name: str, *arguments: Any) -> str:
    out = io.StringIO()
    call_command(name, *[str(argument) for argument in arguments], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_train_model_prints_each_epoch_and_the_kept_checkpoint(trained: tuple[Path, str]) -> None:
    out, output = trained
    lines = output.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert all("loss" in line and "validation Dice" in line for line in lines if line.startswith("epoch "))
    digest = side_file_path(out).read_text().split()[0]
    assert any(line.startswith("Kept epoch") and line.endswith(str(out)) for line in lines)
    assert f"sha256 {digest}" in lines
    assert load_checkpoint(out, expected_arch="combined").architecture["options"]["unet_widths"] == [8, 16, 32]


def test_evaluate_model_writes_the_documented_json(thyroid: Path, trained: tuple[Path, str], tmp_path: Path) -> None:
    checkpoint, _ = trained
    out = tmp_path / "results" / "evaluation.json"
    output = command("evaluate_model", "--data", thyroid, "--checkpoint", checkpoint, "--json", out)

    result = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert set(result) == REQUIRED_KEYS == set(JSON_KEYS)
    assert result["n_images"] == 6 == len(result["per_image"])
    assert f"checkpoint sha256 {side_file_path(checkpoint).read_text().split()[0]}" in output
    for key in ("dice", "iou", "lesion_sensitivity"):
        assert 0.0 <= result[key] <= 1.0
    assert 0.0 <= result["hd95"] <= math.hypot(39, 39)
    for entry in result["per_image"]:
        assert set(entry) == {
            "name",
            "dice",
            "iou",
            "hd95",
            "lesions",
            "lesions_found",
            "small_lesions",
            "small_lesions_found",
            "large_lesions",
            "large_lesions_found",
        }
        assert 0 <= entry["lesions_found"] <= entry["lesions"]
        assert entry["small_lesions"] + entry["large_lesions"] == entry["lesions"]
    assert result["dice"] == pytest.approx(sum(entry["dice"] for entry in result["per_image"]) / 6, abs=1e-5)
    assert "Dice" in output and str(out) in output


def test_evaluate_model_refuses_an_altered_checkpoint_and_writes_nothing(
    thyroid: Path, trained: tuple[Path, str], tmp_path: Path
) -> None:
    checkpoint, _ = trained
    altered = tmp_path / "altered.pt"
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 0xFF
    altered.write_bytes(bytes(data))
    side_file_path(altered).write_text(side_file_path(checkpoint).read_text().replace(checkpoint.name, altered.name))
    out = tmp_path / "evaluation.json"
    with pytest.raises(CommandError, match="corrupted or altered: sha256"):
        command("evaluate_model", "--data", thyroid, "--checkpoint", altered, "--json", out)
    assert not out.exists()


def test_train_model_refuses_a_folder_without_images_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    out = tmp_path / "model.pt"
    with pytest.raises(CommandError) as raised:
        command(
            "train_model",
            "--data",
            tmp_path,
            "--arch",
            "unet",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--out",
            out,
            "--no-progress",
        )
    assert str(tmp_path) in str(raised.value)
    assert not out.exists() and not side_file_path(out).exists()


def test_train_model_refuses_an_unknown_architecture_setting(thyroid: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    with pytest.raises(CommandError, match="unet_width"):
        command(
            "train_model",
            "--data",
            thyroid,
            "--arch",
            "combined",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--out",
            out,
            "--no-progress",
            "--option",
            "unet_width=[8,16,32]",
        )
    assert not out.exists()


def test_train_model_refuses_cuda_on_a_machine_without_it(
    thyroid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "model.pt"
    with pytest.raises(CommandError, match="no CUDA GPU is available"):
        command(
            "train_model",
            "--data",
            thyroid,
            "--arch",
            "unet",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--out",
            out,
            "--device",
            "cuda",
        )
    assert not out.exists()


def test_evaluate_model_refuses_data_the_checkpoint_was_not_trained_for(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    from ai_engine.synthetic import write_colposcopy_2d

    colour = write_colposcopy_2d(tmp_path / "colposcopy", count=2, size=32)
    out = tmp_path / "evaluation.json"
    with pytest.raises(CommandError, match=r"expects 1 image channel\(s\) but .* has 3"):
        command("evaluate_model", "--data", colour, "--checkpoint", trained[0], "--json", out)
    assert not out.exists()


def test_a_checkpoint_of_another_architecture_is_refused_where_one_is_expected(trained: tuple[Path, str]) -> None:
    with pytest.raises(CheckpointError, match="holds a 'combined' network, not the expected 'attention_unet'"):
        load_checkpoint(trained[0], expected_arch="attention_unet")
