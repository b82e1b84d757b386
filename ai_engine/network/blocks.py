"""The building blocks of the combined network, in the order they appear in the paper's figure.

Every block works in 2D and 3D through MONAI's layer factories (``spatial_dims``), and every change of size goes
through :func:`resample` to the exact size of the tensor it must meet, so odd sizes such as 97x131 never break a skip
connection. Shapes: B batch, C channels, S the spatial size (H, W) or (D, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import ChannelSELayer, Convolution
from monai.networks.layers.factories import Conv
from torch import Tensor, nn


def resample(features: Tensor, size: Sequence[int]) -> Tensor:
    """(B, C, *S) -> (B, C, *size).

    Shrinking on every axis averages over the covered area (anti-aliased: the Kite branch shrinks by 4-8x at once,
    where linear interpolation would just pick pixels); anything else is (bi/tri)linear interpolation.
    """
    target = tuple(int(edge) for edge in size)
    source = tuple(features.shape[2:])
    if source == target:
        return features
    if all(new <= old for new, old in zip(target, source, strict=True)):
        return F.interpolate(features, size=target, mode="area")
    mode = "bilinear" if features.ndim == 4 else "trilinear"
    return F.interpolate(features, size=target, mode=mode, align_corners=False)


def conv_norm_act(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    norm: str,
    kernel_size: int = 3,
    dilation: int = 1,
    activation: bool = True,
) -> Convolution:
    """A convolution ("same" padding, also when dilated), normalisation, then ReLU unless ``activation`` is False."""
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        dilation=dilation,
        norm=(norm, {"affine": True}),
        act=("relu", {"inplace": True}) if activation else None,
        bias=False,  # the normalisation's shift makes a bias redundant
    )


def pointwise_conv(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """A plain 1x1 convolution: a per-pixel linear map of the channels."""
    conv_type: type[nn.Module] = Conv[Conv.CONV, spatial_dims]
    return conv_type(in_channels, out_channels, kernel_size=1)


class ContextAggregationBlock(nn.Module):
    """One U-Net encoder level: a normal 3x3 convolution and dilated 3x3 convolutions in parallel, summed, refined by
    a second 3x3 convolution, then squeeze-and-excitation channel re-weighting.

    The branches are summed rather than concatenated and mixed by a 1x1 convolution: after each branch's ReLU the
    refining 3x3 convolution already mixes the channels, so the 1x1 would only add weights. With ``dilations=(1,)``
    and no squeeze-and-excitation this is the classic U-Net double convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        dilations: Sequence[int],
        squeeze_excitation: bool,
        norm: str,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            conv_norm_act(spatial_dims, in_channels, out_channels, norm=norm, dilation=rate) for rate in dilations
        )
        self.refine = conv_norm_act(spatial_dims, out_channels, out_channels, norm=norm)
        # reduction 4 rather than the paper's 16: with 16-128 channels, 16 would leave 1-8 hidden units
        self.excitation: nn.Module = (
            ChannelSELayer(spatial_dims, out_channels, r=min(4, out_channels)) if squeeze_excitation else nn.Identity()
        )

    def forward(self, features: Tensor) -> Tensor:
        aggregated = self.branches[0](features)
        for branch in self.branches[1:]:
            aggregated = aggregated + branch(features)
        result: Tensor = self.excitation(self.refine(aggregated))
        return result


class AttentionGate(nn.Module):
    """Additive attention gate (Attention U-Net): alpha = sigmoid(psi(ReLU(W_x x + W_g g))), returns alpha * x.

    ``x`` is the skip connection, ``g`` the decoder's gating signal; ``alpha`` (B, 1, *S) lets the decoder suppress
    skip features away from the structure it is outlining.
    """

    def __init__(self, spatial_dims: int, skip_channels: int, gating_channels: int, *, norm: str) -> None:
        super().__init__()
        inner_channels = max(skip_channels // 2, 1)
        self.skip_projection = conv_norm_act(
            spatial_dims, skip_channels, inner_channels, norm=norm, kernel_size=1, activation=False
        )
        self.gating_projection = conv_norm_act(
            spatial_dims, gating_channels, inner_channels, norm=norm, kernel_size=1, activation=False
        )
        # no normalisation before the sigmoid: instance norm would force half of every image to be "unattended"
        self.coefficients = nn.Sequential(nn.ReLU(), pointwise_conv(spatial_dims, inner_channels, 1), nn.Sigmoid())

    def forward(self, skip: Tensor, gating: Tensor) -> Tensor:
        gating = resample(self.gating_projection(gating), skip.shape[2:])
        alpha: Tensor = self.coefficients(self.skip_projection(skip) + gating)  # (B, 1, *S_skip)
        return skip * alpha


class CrossResidualFusion(nn.Module):
    """KiU-Net's cross residual fusion block: each branch receives the other's features, resampled to its own size,
    as a residual.

    Both convolutions run at the U-Net's size, the smaller one: the Kite features are shrunk before their
    convolution and the U-Net features enlarged after theirs. KiU-Net convolves the Kite features at the Kite size,
    which costs 4-64x more in 2D and 8-512x more in 3D.

    ``kite_size`` delivers the fused Kite features at another size: the deepest Kite level is only ever read shrunk
    to the level above, so fusing there skips two passes over the largest tensor of the network.
    """

    def __init__(self, spatial_dims: int, unet_channels: int, kite_channels: int, *, norm: str) -> None:
        super().__init__()
        self.kite_to_unet = conv_norm_act(spatial_dims, kite_channels, unet_channels, norm=norm)
        self.unet_to_kite = conv_norm_act(spatial_dims, unet_channels, kite_channels, norm=norm)

    def forward(self, unet: Tensor, kite: Tensor, kite_size: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        kite = resample(kite, kite.shape[2:] if kite_size is None else kite_size)
        # both directions read the features from before the exchange, as in KiU-Net
        fused_unet = unet + self.kite_to_unet(resample(kite, unet.shape[2:]))
        fused_kite = kite + resample(self.unet_to_kite(unet), kite.shape[2:])
        return fused_unet, fused_kite


class PartialDecoder(nn.Module):
    """Cascaded partial decoder (CPD, as used by HarDNet-MSEG) over the three deepest U-Net levels.

    The shallow levels are dropped to save computation; the deep ones are multiplied into each other from deep to
    shallow, so a shallow feature survives only where the deeper context agrees. CPD's layer names are in the
    comments. The output (B, out_channels, *S_shallow) is
    at the size of the shallowest of the three levels; the caller enlarges it to the input size.
    """

    def __init__(
        self,
        spatial_dims: int,
        level_channels: tuple[int, int, int],
        channels: int,
        out_channels: int,
        *,
        norm: str,
    ) -> None:
        super().__init__()

        def conv(in_channels: int, out_channels: int) -> Convolution:
            # CPD's BasicConv2d: convolution and normalisation, no activation (the products need signed values)
            return conv_norm_act(spatial_dims, in_channels, out_channels, norm=norm, activation=False)

        # 1x1 reductions to a common width; CPD uses receptive field blocks here, the encoder's context aggregation
        # blocks already provide that context
        self.reduce = nn.ModuleList(
            conv_norm_act(spatial_dims, level, channels, norm=norm, kernel_size=1) for level in level_channels
        )
        self.deep_to_middle = conv(channels, channels)  # conv_upsample1
        self.deep_to_shallow = conv(channels, channels)  # conv_upsample2
        self.middle_to_shallow = conv(channels, channels)  # conv_upsample3
        self.deep_to_middle_concat = conv(channels, channels)  # conv_upsample4
        self.middle_to_shallow_concat = conv(2 * channels, 2 * channels)  # conv_upsample5
        self.concat_middle = conv(2 * channels, 2 * channels)  # conv_concat2
        self.concat_shallow = conv(3 * channels, 3 * channels)  # conv_concat3
        self.refine = conv(3 * channels, 3 * channels)  # conv4
        self.output = pointwise_conv(spatial_dims, 3 * channels, out_channels)  # conv5

    def forward(self, shallow: Tensor, middle: Tensor, deep: Tensor) -> Tensor:
        shallow, middle, deep = (self.reduce[0](shallow), self.reduce[1](middle), self.reduce[2](deep))
        middle_size, shallow_size = middle.shape[2:], shallow.shape[2:]
        deep_at_middle = resample(deep, middle_size)

        middle_gated = self.deep_to_middle(deep_at_middle) * middle
        shallow_gated = (
            self.deep_to_shallow(resample(deep, shallow_size))
            * self.middle_to_shallow(resample(middle, shallow_size))
            * shallow
        )
        middle_cascade = self.concat_middle(torch.cat([middle_gated, self.deep_to_middle_concat(deep_at_middle)], 1))
        shallow_cascade = self.concat_shallow(
            torch.cat([shallow_gated, self.middle_to_shallow_concat(resample(middle_cascade, shallow_size))], 1)
        )
        result: Tensor = self.output(self.refine(shallow_cascade))  # (B, out_channels, *S_shallow)
        return result


class UNetDecoder(nn.Module):
    """The full U-Net decoder (the ablation of the partial decoder): at every level enlarge, concatenate the skip
    connection, two 3x3 convolutions. Output (B, level_channels[0], *S_level0)."""

    def __init__(self, spatial_dims: int, level_channels: Sequence[int], *, norm: str) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(
                conv_norm_act(
                    spatial_dims, level_channels[level + 1] + level_channels[level], level_channels[level], norm=norm
                ),
                conv_norm_act(spatial_dims, level_channels[level], level_channels[level], norm=norm),
            )
            for level in range(len(level_channels) - 1)
        )

    def forward(self, skips: Sequence[Tensor]) -> Tensor:
        decoded = skips[-1]
        for level in reversed(range(len(self.levels))):
            skip = skips[level]
            decoded = self.levels[level](torch.cat([skip, resample(decoded, skip.shape[2:])], dim=1))
        return decoded


def kite_upsampled_size(size: Sequence[int], *, inplane_only: bool) -> tuple[int, ...]:
    """Twice the size on every axis, or in 3D with ``inplane_only`` only in-plane: (D, H, W) -> (D, 2H, 2W)."""
    doubled = [2 * edge for edge in size]
    if inplane_only and len(size) == 3:
        doubled[0] = int(size[0])
    return tuple(doubled)


class KiteEncoderLevel(nn.Module):
    """One level of Kite-Net's overcomplete encoder: the features are ENLARGED (B, C, S) -> (B, C, 2S), then a 3x3
    convolution runs at the enlarged size, where it covers half as much of the image as at the level above: the
    receptive field shrinks with depth, so small structures and boundaries keep their detail."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, *, norm: str, inplane_only: bool
    ) -> None:
        super().__init__()
        self.conv = conv_norm_act(spatial_dims, in_channels, out_channels, norm=norm)
        self.inplane_only = inplane_only

    def forward(self, features: Tensor) -> Tensor:
        # enlarge first (KiU-Net convolves first, then enlarges): otherwise the deepest level would only hold
        # interpolated values, and one Kite level would never convolve above the input's resolution
        enlarged = resample(features, kite_upsampled_size(features.shape[2:], inplane_only=self.inplane_only))
        result: Tensor = self.conv(enlarged)
        return result


class KiteDecoderLevel(nn.Module):
    """One level of Kite-Net's decoder: shrink back to the size of the level above, then a 3x3 convolution.

    Shrinking first makes the decoder's convolutions 4x (2D, in-plane 3D) or 8x (3D) cheaper than KiU-Net's
    convolve-then-shrink; the encoder has already looked at the enlarged size.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, norm: str) -> None:
        super().__init__()
        self.conv = conv_norm_act(spatial_dims, in_channels, out_channels, norm=norm)

    def forward(self, features: Tensor, size: Sequence[int]) -> Tensor:
        result: Tensor = self.conv(resample(features, size))
        return result
