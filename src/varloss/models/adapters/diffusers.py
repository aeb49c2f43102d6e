"""`diffusers:PATH`: diffusers' autoencoders (the VAEs of latent diffusion) from a local folder.

Classes: `AutoencoderKL`, and where the installed diffusers has them `AsymmetricAutoencoderKL`
(a Gaussian posterior too), `AutoencoderTiny` (taesd), `VQModel` and `AutoencoderDC`, whose
encoders give one deterministic code per image: their posterior has no variance (logvar -inf,
so a sampled reconstruction is the mean's; `describe()["codes"]` says so), and a VQModel's
decoder quantises the code to its codebook first, as its own forward pass does.

The folder is what `save_pretrained` writes (config.json + weights, `_class_name` one of the
above), or a whole pipeline folder whose `vae/` subfolder holds it. It is loaded with
`from_pretrained(PATH, local_files_only=True)` after varloss has checked that PATH is a local
folder: nothing reaches a model hub (varloss also sets HF_HUB_OFFLINE=1 unless it is set
already).

The model works on [-1, 1] images; the adapter maps [0, 1] inputs there and its outputs back,
clipped to [-1, 1] first as diffusers' own image processor does. Latents are scaled as a
diffusion model sees them: z = (latent - shift_factor) * scaling_factor, so codes are near unit
variance; encode returns mu and logvar of those scaled latents (C x h x w each). Images go
through in chunks of at most `batch_size` (by default as many as fit 2^21 pixels: 8 images of
512 x 512). Prior samples of these models are not meant to be images (a diffusion model
generates their latents), so `generates_images` is False: `measure` reports reconstructions only
unless samples are asked for, and `correct` refuses.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from varloss.errors import InputError
from varloss.models.adapters.base import ModelAdapter

__all__ = ["DiffusersAdapter", "load_diffusers"]

CLASS_NAME = "AutoencoderKL"
# class name -> the config field whose length gives the downsampling (2^(len - 1))
CLASSES = {
    "AutoencoderKL": "block_out_channels",
    "AsymmetricAutoencoderKL": "down_block_out_channels",
    "AutoencoderTiny": "encoder_block_out_channels",
    "VQModel": "block_out_channels",
    "AutoencoderDC": "encoder_block_out_channels",
}
PIXELS_PER_BATCH = 2**21
GENERATION_NOTE = (
    "an {name}'s prior samples are not meant to be images (a latent diffusion model "
    "generates its latents), so there is nothing for a variance remedy to correct"
)
DETERMINISTIC = ("AutoencoderTiny", "VQModel", "AutoencoderDC")  # one code per image
DETERMINISTIC_NOTE = "deterministic: one code per image, no posterior variance"


def downsampling(module: torch.nn.Module) -> int:
    """How many pixels per latent along each side: 2^(number of encoder blocks - 1)."""
    return 2 ** (len(getattr(module.config, CLASSES[type(module).__name__])) - 1)


class DiffusersAdapter(ModelAdapter):
    """A loaded diffusers autoencoder, latents scaled by its `scaling_factor` (and
    `shift_factor`); a deterministic encoder's codes have logvar -inf (no variance)."""

    kind = "diffusers"

    def __init__(self, module: torch.nn.Module, **options) -> None:
        super().__init__(module, **options)
        config = module.config
        self.scaling_factor = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(config, "shift_factor", 0.0) or 0.0)
        self.downsampling = downsampling(module)
        self.fixed_batch = options.get("batch_size") is not None
        self.deterministic = type(module).__name__ in DETERMINISTIC

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.module.encode(x, return_dict=False)[0]
        if self.deterministic:  # AutoencoderTiny, VQModel (codes before quantisation), DC
            mu = (encoded - self.shift_factor) * self.scaling_factor
            return mu, torch.full_like(mu, -math.inf)
        mu = (encoded.mean - self.shift_factor) * self.scaling_factor
        # var(a * latent) = a^2 var(latent): the log-variance moves by 2 log a
        logvar = encoded.logvar + 2.0 * math.log(self.scaling_factor)
        return mu, logvar

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decode(z / self.scaling_factor + self.shift_factor, return_dict=False)[0]

    def _follow_image_size(self, x: torch.Tensor) -> None:
        """The model is convolutional: latents (and prior codes) follow the images' size."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        channels = self.latent_shape[0]
        self.latent_shape = (channels, height // self.downsampling, width // self.downsampling)
        self.image_shape = (int(x.shape[1]), height, width)
        if not self.fixed_batch:
            self.batch_size = max(1, PIXELS_PER_BATCH // (height * width))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == 4:
            self._follow_image_size(x)
        return super().encode(x)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "codes": DETERMINISTIC_NOTE if self.deterministic else "Gaussian posterior",
            "batch_size": self.batch_size if self.fixed_batch else f"{PIXELS_PER_BATCH} pixels",
        }


def _model_folder(folder: Path) -> tuple[Path, str]:
    """(the folder holding the autoencoder's config.json: `folder` or its `vae/` subfolder, its
    class name)."""
    if not folder.is_dir():
        raise InputError(
            f"diffusers model folder {folder} does not exist; expected a local folder written by "
            "save_pretrained (varloss never downloads models)."
        )
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    config_file = folder / "config.json"
    try:
        name = json.loads(config_file.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        name = None
    if name not in CLASSES:
        raise InputError(
            f"{folder} is not an AutoencoderKL folder (expected config.json with _class_name "
            f"one of {', '.join(CLASSES)}, as save_pretrained writes it; found {name!r})."
        )
    return folder, name


def load_diffusers(
    path: str, *, device: str | torch.device = "cpu", batch_size: int | None = None
) -> DiffusersAdapter:
    """The diffusers autoencoder saved in local folder `path` as an adapter on `device`."""
    folder, name = _model_folder(Path(path))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers reads it: never a hub
    try:
        # optional dependency (the `adapters` extra): imported only when a diffusers model is used
        import diffusers
    except ImportError:
        raise InputError(
            f"diffusers:{path} needs the optional package diffusers; install it with "
            "pip install 'varloss[adapters]'."
        ) from None
    model_class = getattr(diffusers, name, None)
    if model_class is None:
        raise InputError(
            f"{folder} holds a {name}, which the installed diffusers {diffusers.__version__} "
            "does not have; upgrade diffusers."
        )
    try:
        model = model_class.from_pretrained(
            str(folder.resolve()), local_files_only=True, low_cpu_mem_usage=False
        )
    except Exception as error:  # noqa: BLE001 - diffusers' own error types, named once
        raise InputError(
            f"diffusers could not load the {name} in {folder} "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from None
    model = model.to(device).eval()
    config = model.config
    sample_size = getattr(config, "sample_size", None)
    side = int(sample_size) if isinstance(sample_size, int) else None
    factor = downsampling(model)
    latent_side = (side or factor) // factor
    channels = getattr(config, "vq_embed_dim", None) or int(config.latent_channels)
    return DiffusersAdapter(
        model,
        source=str(Path(path)),
        image_shape=(int(config.in_channels), side, side) if side else None,
        latent_shape=(int(channels), latent_side, latent_side),
        value_range=(-1.0, 1.0),
        clamp=True,
        generation_note=GENERATION_NOTE.format(name=name),
        batch_size=batch_size,
    )
