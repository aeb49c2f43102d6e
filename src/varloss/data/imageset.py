"""The one in-memory form every data set is loaded into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from varloss.data.convert import to_images


@dataclass
class ImageSet:
    """Images as a float32 tensor N x C x H x W in [0, 1], optional int64 labels, and provenance.

    `source` says where the pixels came from (cache, local path, ...) so reports can record it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    split: str
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Per-image shape (C, H, W)."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]


def uint8_to_imageset(
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    name: str,
    split: str,
    source: str,
    limit: int | None = None,
) -> ImageSet:
    """Turn uint8 N x C x H x W pixels (possibly memory-mapped) into an ImageSet with values k/255
    (by `to_images`, the one converter).

    Only the first `limit` rows are read, so a limited load of a memory-mapped set touches little.
    """
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    pixels = to_images(images, name=f"data set {name} ({split})")
    label_tensor = (
        None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    )
    return ImageSet(pixels, label_tensor, name, split, source)
