"""The architectures of the domain classifiers (`varloss.quality.domain` trains and caches them).

`features(x)` is the penultimate layer (the "FID (domain)" features), `forward(x)` the class
logits; `architecture_for` picks one by image shape: LeNet-like for 1 x 28 x 28, a small ResNet
for 32 x 32 and 64 x 64 colour images, a tiny CNN for smaller images (sklearn digits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from varloss.errors import InputError

# ---- architectures: `features(x)` is the penultimate layer, `forward(x)` the class logits ----


class TinyCNN(nn.Module):
    """For small images (e.g. 1 x 8 x 8 digits): one conv block and a 64-d hidden layer."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, 3, padding=1)
        self.hidden = nn.Linear(16 * (size // 2) ** 2, width)
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x - 0.5)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LeNet(nn.Module):
    """LeNet-like for 28 x 28: two 5 x 5 conv + max-pool blocks, a 128-d hidden layer."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.hidden = nn.Linear(32 * (size // 4) ** 2, width)
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x - 0.5)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """A small ResNet for 32 x 32 / 64 x 64 colour images: 3 stages, global average pool (128-d)."""

    def __init__(self, channels: int, size: int, classes: int, width: int = 32) -> None:
        super().__init__()
        stride = 2 if size >= 64 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stages = nn.Sequential(
            _Block(width, width, 1), _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2)
        )
        self.head = nn.Linear(4 * width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x - 0.5)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "tiny-cnn": TinyCNN,
    "lenet": LeNet,
    "small-resnet": SmallResNet,
}


def architecture_for(image_shape: tuple[int, int, int]) -> str:
    """LeNet-like for gray 28-ish images, small ResNet for colour 32/64, tiny CNN below 16."""
    channels, height, width = image_shape
    if height != width:
        raise InputError(f"domain classifiers need square images, got {height} x {width}.")
    if height < 16:
        return "tiny-cnn"
    if channels == 1 and height <= 32:
        return "lenet"
    return "small-resnet"
