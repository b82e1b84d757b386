"""The combined U-Net / Kite-Net: sizes, gradients, ablation switches, category head, configuration, learning."""

import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import Tensor, nn

from ai_engine.network import CombinedNet, CombinedNetConfig, NetworkInputError

SMALL_3D: dict[str, Any] = {"spatial_dims": 3, "unet_widths": (4, 8, 16), "kite_widths": (4, 8)}


def build(seed: int = 0, **settings: Any) -> CombinedNet:
    torch.manual_seed(seed)
    return CombinedNet(**settings)


def copy_shared_weights(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` every weight it shares (same name and shape) with ``source``."""
    target_state = target.state_dict()
    shared = {
        name: value
        for name, value in source.state_dict().items()
        if name in target_state and target_state[name].shape == value.shape
    }
    target.load_state_dict(shared, strict=False)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_it_returns_logits_of_the_input_size_for_odd_2d_images(in_channels: int) -> None:
    model = build(in_channels=in_channels)
    image = torch.randn(1, in_channels, 97, 131)

    with torch.no_grad():
        logits = model(image)

    assert logits.shape == (1, 2, 97, 131)


@pytest.mark.parametrize("inplane_only", [True, False])
def test_it_returns_logits_of_the_input_size_for_3d_volumes(inplane_only: bool) -> None:
    model = build(**SMALL_3D, kite_inplane_only=inplane_only)
    kite_sizes: list[tuple[int, ...]] = []
    model.kite_encoder[0].register_forward_hook(lambda _module, _args, output: kite_sizes.append(output.shape[2:]))

    with torch.no_grad():
        logits = model(torch.randn(1, 1, 16, 20, 24))

    assert logits.shape == (1, 2, 16, 20, 24)
    # the Kite branch enlarges in-plane only (depth kept) or along every axis
    assert kite_sizes == [(16, 40, 48) if inplane_only else (32, 40, 48)]


def test_gradients_reach_both_branches() -> None:
    model = build()
    logits = model(torch.randn(2, 1, 32, 32))

    F.cross_entropy(logits, torch.randint(0, 2, (2, 32, 32))).backward()

    unet_weight = model.unet_encoder[0].branches[0].conv.weight
    kite_weight = model.kite_encoder[0].conv.conv.weight
    assert unet_weight.grad is not None and unet_weight.grad.abs().sum() > 0
    assert kite_weight.grad is not None and kite_weight.grad.abs().sum() > 0


ABLATIONS_2D: list[dict[str, Any]] = [
    {"dilations": (1,)},
    {"squeeze_excitation": False},
    {"partial_decoder": False},
    {"kite_widths": ()},
    {"kite_widths": (8, 16)},
    {"attention_gates": False},
    {"fusion": False},
    {"norm": "batch"},
]


@pytest.mark.parametrize(
    ("base", "flip"),
    [({}, flip) for flip in ABLATIONS_2D]
    + [
        # with two Kite levels the gates also sit on the Kite skip connection
        ({"kite_widths": (4, 8)}, {"attention_gates": False}),
        (SMALL_3D, {"kite_inplane_only": False}),
    ],
    ids=lambda settings: ",".join(f"{key}={value}" for key, value in settings.items()) or "default",
)
def test_every_switch_changes_the_computation(base: dict[str, Any], flip: dict[str, Any]) -> None:
    reference = build(**base).eval()
    flipped = build(**{**base, **flip}).eval()
    copy_shared_weights(reference, flipped)  # what remains different is the switch itself
    spatial = (12, 14, 16) if reference.config.spatial_dims == 3 else (33, 35)
    image = torch.randn(2, 1, *spatial)

    with torch.no_grad():
        reference_logits, flipped_logits = reference(image), flipped(image)

    assert flipped_logits.shape == reference_logits.shape
    assert not torch.allclose(reference_logits, flipped_logits, atol=1e-5)


def test_switches_off_removes_the_modules_they_add() -> None:
    plain = build(dilations=(1,), squeeze_excitation=False, attention_gates=False, fusion=False, kite_widths=(4, 8))

    assert len(plain.unet_encoder[0].branches) == 1
    assert isinstance(plain.unet_encoder[0].excitation, nn.Identity)
    assert len(plain.kite_gates) == 0 and plain.branch_gate is None
    assert len(plain.fusions) == 0
    assert len(build(kite_widths=()).kite_encoder) == 0


def test_category_head_returns_one_logit_per_category() -> None:
    model = build(num_categories=3, in_channels=3)
    segmentation, category = model.forward_with_category(torch.randn(2, 3, 40, 41))

    assert segmentation.shape == (2, 2, 40, 41)
    assert category is not None and category.shape == (2, 3)
    assert model(torch.randn(2, 3, 40, 41)).shape == (2, 2, 40, 41)  # forward gives the segmentation only


def test_category_head_leaves_the_segmentation_unchanged() -> None:
    without_head = build().eval()
    with_head = build(num_categories=3).eval()
    copy_shared_weights(without_head, with_head)
    image = torch.randn(1, 1, 36, 36)

    with torch.no_grad():
        segmentation, category = without_head.forward_with_category(image)
        segmentation_with_head, _ = with_head.forward_with_category(image)

    assert category is None
    assert torch.allclose(segmentation, segmentation_with_head)


def test_default_model_fits_a_small_checkpoint() -> None:
    parameters = sum(parameter.numel() for parameter in build().parameters())

    assert parameters < 2_500_000
    assert parameters * 4 <= 10 * 1024 * 1024  # float32 bytes


def test_config_round_trips_through_json() -> None:
    config = CombinedNetConfig(spatial_dims=3, in_channels=3, kite_widths=(4, 8), num_categories=3, norm="batch")

    restored = CombinedNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))

    assert restored == config
    assert CombinedNet(restored).config == config


def test_overrides_are_validated_like_a_config() -> None:
    assert CombinedNet(CombinedNetConfig(in_channels=3), kite_widths=[4, 8]).config.kite_widths == (4, 8)
    with pytest.raises(ValueError, match="Unknown network setting"):
        CombinedNet(kite_width=(4, 8))


@pytest.mark.parametrize(
    ("bad_settings", "message"),
    [
        ({"kite_width": [8]}, "Unknown network setting\\(s\\): kite_width"),
        ({"spatial_dims": 4}, "spatial_dims must be 2"),
        ({"in_channels": 0}, "in_channels must be a whole number"),
        ({"out_channels": True}, "out_channels must be a whole number"),
        ({"unet_widths": [16, 32]}, "at least 3 levels"),
        ({"unet_widths": [16, 0, 32]}, "unet_widths must be a list of whole numbers"),
        ({"kite_widths": "16"}, "kite_widths must be a list"),
        ({"dilations": []}, "at least one dilation rate"),
        ({"dilations": [1, 2, 2]}, "must not repeat"),
        ({"squeeze_excitation": "yes"}, "squeeze_excitation must be true or false"),
        ({"num_categories": -1}, "num_categories must be 0"),
        ({"norm": "group"}, "norm must be one of instance, batch"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(bad_settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CombinedNetConfig.from_dict(bad_settings)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 32, 32), "expects 1 input channel"),
        ((1, 32, 32), "4-dimensional input"),
        ((1, 1, 32, 6), "too small: every side needs at least 9"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(NetworkInputError, match=message):
        build()(torch.randn(*shape))


def outlined_shapes(size: int = 32) -> tuple[Tensor, Tensor]:
    """Two images showing only the outline of a disc and of a square, and their filled masks (2, 1, size, size)."""
    rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (rows - 14) ** 2 + (columns - 18) ** 2 <= 8**2
    square = (rows >= 6) & (rows < 20) & (columns >= 10) & (columns < 26)
    masks = torch.stack([disc, square]).unsqueeze(1).float()
    interiors = -F.max_pool2d(-masks, kernel_size=3, stride=1, padding=1)  # erosion by one pixel
    images = (masks - interiors) + 0.2 * torch.randn_like(masks)  # the network has to fill the inside itself
    return images, masks


def test_it_overfits_a_tiny_batch() -> None:
    images, masks = outlined_shapes()
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)

    for _step in range(100):
        optimizer.zero_grad()
        loss = loss_function(model(images), masks)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            predicted = model(images).argmax(dim=1, keepdim=True).float()
        dice = 2 * (predicted * masks).sum() / (predicted.sum() + masks.sum())
        if dice > 0.9:
            break

    assert dice > 0.9
