"""The architecture registry: every network the trial compares, built from a JSON description, on any input size."""

import json
from typing import Any

import pytest
import torch
from monai.networks.nets import AttentionUnet, BasicUNet, UNet
from torch import nn

from ai_engine.architectures import (
    ARCHITECTURES,
    ArchitectureError,
    DivisiblePadded,
    architecture_config,
    build_model,
    count_parameters,
)
from ai_engine.network import CombinedNet


def structure(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_keeps_the_input_size(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(architecture_config(arch, spatial_dims=2, in_channels=3, out_channels=3))

    with torch.no_grad():
        logits = model(torch.randn(1, 3, 50, 70))  # 50 and 70 are not multiples of 8 or 16

    assert logits.shape == (1, 3, 50, 70)


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
        ("attention_unet", {"channels": [4, 8, 16], "strides": [2, 2]}),
        ("combined", {"unet_widths": [4, 8, 16], "kite_widths": [4]}),
    ],
)
def test_3d_architectures_keep_the_input_size(arch: str, options: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = build_model(architecture_config(arch, spatial_dims=3, in_channels=1, out_channels=2, **options))

    with torch.no_grad():
        logits = model(torch.randn(1, 1, 9, 10, 11))

    assert logits.shape == (1, 2, 9, 10, 11)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_description_rebuilds_the_same_network_after_json(arch: str) -> None:
    config = architecture_config(arch, spatial_dims=2, in_channels=1, out_channels=2)

    restored = json.loads(json.dumps(config))

    assert restored == config
    assert structure(build_model(restored)) == structure(build_model(config))


def test_the_description_records_every_setting() -> None:
    config = architecture_config("combined", spatial_dims=2, in_channels=3, out_channels=2, kite_widths=(4, 8))

    assert config["arch"] == "combined" and config["in_channels"] == 3
    assert config["options"]["kite_widths"] == [4, 8]
    assert config["options"]["unet_widths"] == [16, 32, 64, 128]  # the default, written down


def test_baselines_have_the_documented_widths() -> None:
    def built(arch: str) -> int:
        return count_parameters(build_model(architecture_config(arch, spatial_dims=2, in_channels=1, out_channels=2)))

    widths = (16, 32, 64, 128)
    assert built("unet") == count_parameters(UNet(2, 1, 2, channels=widths, strides=(2, 2, 2), num_res_units=2))
    assert built("attention_unet") == count_parameters(AttentionUnet(2, 1, 2, channels=widths, strides=(2, 2, 2)))
    assert built("basic_unet") == count_parameters(BasicUNet(2, 1, 2, features=(16, 32, 64, 128, 256, 16)))


def test_kiunet_is_the_combined_network_without_the_unet_extras() -> None:
    model = build_model(architecture_config("kiunet", spatial_dims=2, in_channels=1, out_channels=2))

    assert isinstance(model, CombinedNet)
    config = model.config
    assert config.dilations == (1,)
    assert not config.squeeze_excitation and not config.partial_decoder and not config.attention_gates
    assert config.fusion and config.kite_widths
    assert count_parameters(model) < count_parameters(
        build_model(architecture_config("combined", spatial_dims=2, in_channels=1, out_channels=2))
    )


def test_kiunet_refuses_to_switch_its_defining_settings() -> None:
    with pytest.raises(ArchitectureError, match="kiunet is the combined network with squeeze_excitation fixed"):
        architecture_config("kiunet", spatial_dims=2, in_channels=1, out_channels=2, squeeze_excitation=True)


def test_unknown_architecture_names_the_choices() -> None:
    with pytest.raises(ArchitectureError, match="Unknown architecture 'segformer'; choose one of: combined, unet"):
        architecture_config("segformer", spatial_dims=2, in_channels=1, out_channels=2)
    with pytest.raises(ArchitectureError, match="Unknown architecture"):
        build_model({"arch": "segformer", "spatial_dims": 2, "in_channels": 1, "out_channels": 2})


@pytest.mark.parametrize("arch", ["unet", "attention_unet", "basic_unet"])
def test_category_head_needs_the_combined_network(arch: str) -> None:
    with pytest.raises(ArchitectureError, match="no image-level category head"):
        architecture_config(arch, spatial_dims=2, in_channels=3, out_channels=2, num_categories=3)


def test_combined_network_gets_a_category_head() -> None:
    model = build_model(
        architecture_config("combined", spatial_dims=2, in_channels=3, out_channels=2, num_categories=3)
    )

    assert isinstance(model, CombinedNet)
    _, category = model.forward_with_category(torch.randn(2, 3, 32, 32))
    assert category is not None and category.shape == (2, 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: architecture_config("unet", spatial_dims=2, in_channels=1, out_channels=2, depth=4), "Unknown unet"),
        (
            lambda: architecture_config("unet", spatial_dims=2, in_channels=1, out_channels=2, channels=[16, "x"]),
            "channels must be a list of whole numbers",
        ),
        (
            lambda: architecture_config("unet", spatial_dims=4, in_channels=1, out_channels=2),
            "spatial_dims must be 2",
        ),
        (
            lambda: architecture_config("combined", spatial_dims=2, in_channels=1, out_channels=2, norm="group"),
            "Invalid combined settings: norm must be one of",
        ),
        (lambda: build_model({"arch": "unet", "spatial_dims": 2}), "lacks in_channels, out_channels"),
        (
            lambda: build_model({"arch": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "seed": 1}),
            "Unknown key\\(s\\) in the network description: seed",
        ),
        (
            lambda: build_model(
                {"arch": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "options": {"strides": [2]}}
            ),
            "Cannot build unet",
        ),
    ],
)
def test_bad_descriptions_are_rejected_with_a_clear_message(call: Any, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        call()


def test_padding_wrapper_crops_back_exactly_what_it_padded() -> None:
    image = torch.randn(1, 2, 50, 70)

    assert torch.equal(DivisiblePadded(nn.Identity(), divisor=16)(image), image)
