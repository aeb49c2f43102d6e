"""Small building blocks shared by the convolutional families (conv, resnet, convdraw)."""

from __future__ import annotations

import torch
from torch import nn

from varloss.errors import InputError

__all__ = ["ResidualBlock", "conv_stages", "group_norm", "stage_channels"]


def conv_stages(
    image_shape: tuple[int, int, int], family: str, min_side: int = 4, max_stages: int = 5
) -> int:
    """Number of stride-2 halvings: halve while both sides stay even and >= min_side.

    28 -> 14 -> 7 (2 stages), 32 -> 4 (3), 64 -> 4 (4), 8 -> 4 (1). The decoder mirrors this
    with stride-2 transposed convolutions or upsampling, so output sizes match exactly.
    """
    _, height, width = image_shape
    stages = 0
    while (
        stages < max_stages
        and height % 2 == 0
        and width % 2 == 0
        and height // 2 >= min_side
        and width // 2 >= min_side
    ):
        height, width, stages = height // 2, width // 2, stages + 1
    if stages == 0:
        raise InputError(
            f"image_shape {tuple(image_shape)} is too small or odd for the {family} model; "
            f"expected height and width even and at least {2 * min_side}."
        )
    return stages


def stage_channels(stages: int, base_channels: int, max_channels: int) -> list[int]:
    """Channel widths per stage: base, 2 base, 4 base, ... capped at max_channels."""
    return [min(base_channels * 2**i, max_channels) for i in range(stages)]


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv3x3(act(norm(conv3x3(act(norm(x)))))).

    The optional normalisation is GroupNorm, which works per sample: the model behaves the same
    in train and eval mode and a decoded code does not depend on the batch it came with.
    """

    def __init__(self, channels: int, norm: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels) if norm else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels) if norm else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (fewer when the channel count is not divisible)."""
    groups = max(g for g in range(1, 9) if channels % g == 0)
    return nn.GroupNorm(groups, channels)
