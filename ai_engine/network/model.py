"""The combined U-Net / Kite-Net segmentation network of the seed paper, one class for 2D images and 3D volumes.

    input (B, in, *S)
      |-- U-Net encoder: context aggregation block (+SE) per level, max-pooled between levels   -> S, S/2, S/4, ...
      |-- Kite encoder: ENLARGE then convolution per level                                      -> 2S, 4S, ...
      |   (cross residual fusion between U-Net level i and Kite level i, each resampled to the other's size)
      |-- U-Net decoder: partial decoder over the three deepest levels, enlarged to S          -> (B, w0, *S)
      |-- Kite decoder: shrink per level, skips through attention gates, back to S              -> (B, w0, *S)
      +-- U-Net output + gated Kite output -> 1x1 convolution -> raw logits (B, out, *S)

The deepest U-Net level optionally feeds an image-level category head (e.g. normal / low grade / high grade).
"""

from __future__ import annotations

from typing import Any

from monai.networks.layers.factories import Pool
from torch import Tensor, nn

from ai_engine.network.blocks import (
    AttentionGate,
    ContextAggregationBlock,
    CrossResidualFusion,
    KiteDecoderLevel,
    KiteEncoderLevel,
    PartialDecoder,
    UNetDecoder,
    pointwise_conv,
    resample,
)
from ai_engine.network.config import CombinedNetConfig


class NetworkInputError(ValueError):
    """The tensor handed to the network does not fit its configuration."""


class CombinedNet(nn.Module):
    """U-Net branch (context aggregation + partial decoder) and Kite-Net branch (overcomplete, attention-gated skips)
    with cross residual fusion; ``forward`` returns raw logits of the input's spatial size, whatever that size is."""

    def __init__(self, config: CombinedNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = config or CombinedNetConfig()
        if overrides:
            config = CombinedNetConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        dims, norm = config.spatial_dims, config.norm
        unet_widths, kite_widths = config.unet_widths, config.kite_widths
        branch_channels = unet_widths[0]  # both branches end with this many channels so that they can be added

        self.unet_encoder = nn.ModuleList(
            ContextAggregationBlock(
                dims,
                config.in_channels if level == 0 else unet_widths[level - 1],
                width,
                dilations=config.dilations,
                squeeze_excitation=config.squeeze_excitation,
                norm=norm,
            )
            for level, width in enumerate(unet_widths)
        )
        # ceil_mode: an odd edge keeps its last row instead of dropping it, and no edge ever shrinks to zero
        self.pool = Pool[Pool.MAX, dims](kernel_size=2, ceil_mode=True)

        self.kite_encoder = nn.ModuleList(
            KiteEncoderLevel(
                dims,
                config.in_channels if level == 0 else kite_widths[level - 1],
                width,
                norm=norm,
                inplane_only=config.kite_inplane_only,
            )
            for level, width in enumerate(kite_widths)
        )
        fused_levels = min(len(unet_widths), len(kite_widths)) if config.fusion else 0
        self.fusions = nn.ModuleList(
            CrossResidualFusion(dims, unet_widths[level], kite_widths[level], norm=norm)
            for level in range(fused_levels)
        )

        self.unet_decoder: PartialDecoder | UNetDecoder
        if config.partial_decoder:
            # width of the full-resolution level rather than CPD's 32: here the shallowest of the three deepest levels
            # is at 1/2 of the input size (1/8 in HarDNet-MSEG), where 32 channels would cost 4x as much
            self.unet_decoder = PartialDecoder(
                dims, (unet_widths[-3], unet_widths[-2], unet_widths[-1]), unet_widths[0], branch_channels, norm=norm
            )
        else:
            self.unet_decoder = UNetDecoder(dims, unet_widths, norm=norm)

        # decoder level i shrinks Kite level i back to the size of level i-1 (the input's size for level 0)
        self.kite_decoder = nn.ModuleList(
            KiteDecoderLevel(dims, width, kite_widths[level - 1] if level > 0 else branch_channels, norm=norm)
            for level, width in enumerate(kite_widths)
        )
        # gate i filters the skip from Kite level i-1, gated by the decoder's features at that size
        self.kite_gates = nn.ModuleList(
            AttentionGate(dims, kite_widths[level - 1], kite_widths[level - 1], norm=norm)
            for level in range(1, len(kite_widths) if config.attention_gates else 0)
        )
        # the Kite output joins the U-Net output the way a skip connection joins a decoder: fine, local features
        # meeting coarse, contextual ones, so it passes a gate too; this also gives a one-level Kite branch a gate
        self.branch_gate: AttentionGate | None = None
        if config.attention_gates and kite_widths:
            self.branch_gate = AttentionGate(dims, branch_channels, branch_channels, norm=norm)

        self.head = pointwise_conv(dims, branch_channels, config.out_channels)
        self.category_head: nn.Module | None = None
        if config.num_categories:
            self.category_head = nn.Sequential(
                Pool[Pool.ADAPTIVEAVG, dims](1),
                nn.Flatten(),
                nn.Linear(unet_widths[-1], config.num_categories),
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, *S) -> raw segmentation logits (B, out_channels, *S)."""
        segmentation, _ = self.forward_with_category(x)
        return segmentation

    def forward_with_category(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Segmentation logits (B, out_channels, *S) and category logits (B, num_categories), or None without a
        category head."""
        self._check_input(x)
        unet_levels, kite_levels = self._encode(x)
        segmentation_features = self._decode_unet(unet_levels, x)
        if kite_levels:
            kite_features = self._decode_kite(kite_levels, x)
            if self.branch_gate is not None:
                kite_features = self.branch_gate(kite_features, segmentation_features)
            segmentation_features = segmentation_features + kite_features
        segmentation: Tensor = self.head(segmentation_features)
        category: Tensor | None = self.category_head(unet_levels[-1]) if self.category_head is not None else None
        return segmentation, category

    def _encode(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        unet_levels: list[Tensor] = []  # level i: (B, unet_widths[i], *ceil(S / 2^i))
        # Kite level i: (B, kite_widths[i], *S * 2^(i+1)), in-plane only if so configured; when fused, the deepest
        # level is kept at the size of the level above (or S), the only size at which the decoder reads it
        kite_levels: list[Tensor] = []
        unet, kite = x, x
        deepest_kite = len(self.kite_encoder) - 1
        for level, block in enumerate(self.unet_encoder):
            unet = block(unet if level == 0 else self.pool(unet))
            if level < len(self.kite_encoder):
                kite = self.kite_encoder[level](kite)
                if level < len(self.fusions):
                    above = kite_levels[-1] if kite_levels else x
                    kite_size = above.shape[2:] if level == deepest_kite else None
                    unet, kite = self.fusions[level](unet, kite, kite_size)
                kite_levels.append(kite)
            unet_levels.append(unet)
        for level in range(len(self.unet_encoder), len(self.kite_encoder)):  # a Kite branch deeper than the U-Net
            kite = self.kite_encoder[level](kite)
            kite_levels.append(kite)
        return unet_levels, kite_levels

    def _decode_unet(self, unet_levels: list[Tensor], x: Tensor) -> Tensor:
        if isinstance(self.unet_decoder, PartialDecoder):
            decoded = self.unet_decoder(unet_levels[-3], unet_levels[-2], unet_levels[-1])
        else:
            decoded = self.unet_decoder(unet_levels)
        return resample(decoded, x.shape[2:])  # (B, w0, *S)

    def _decode_kite(self, kite_levels: list[Tensor], x: Tensor) -> Tensor:
        decoded = kite_levels[-1]
        for level in reversed(range(1, len(kite_levels))):
            skip = kite_levels[level - 1]
            decoded = self.kite_decoder[level](decoded, skip.shape[2:])
            # KiU-Net adds the skip connection rather than concatenating it
            decoded = decoded + (self.kite_gates[level - 1](skip, decoded) if self.kite_gates else skip)
        result: Tensor = self.kite_decoder[0](decoded, x.shape[2:])  # (B, w0, *S)
        return result

    def _check_input(self, x: Tensor) -> None:
        config = self.config
        expected_dims = config.spatial_dims + 2
        if x.ndim != expected_dims:
            layout = "(batch, channels, height, width)" if config.spatial_dims == 2 else "(batch, channels, D, H, W)"
            raise NetworkInputError(
                f"The network expects {expected_dims}-dimensional input {layout}, got shape {tuple(x.shape)}."
            )
        if x.shape[1] != config.in_channels:
            raise NetworkInputError(
                f"The network expects {config.in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})."
            )
        too_small = [edge for edge in x.shape[2:] if edge < config.minimum_input_size]
        if too_small:
            raise NetworkInputError(
                f"The input {tuple(x.shape[2:])} is too small: every side needs at least {config.minimum_input_size} "
                f"pixels for {config.unet_depth} U-Net levels."
            )
