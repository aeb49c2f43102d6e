"""`pythae:PATH`: a pythae model folder (what `model.save(PATH)` or a pythae training writes).

Any pythae model with a Gaussian posterior (its encoder returns `embedding` and
`log_covariance`: VAE, BetaVAE, IWAE, FactorVAE, BetaTCVAE, MSSSIM_VAE, INFOVAE_MMD, HVAE,
RHVAE, VAEGAN, ...) loads through `pythae.models.AutoModel.load_from_folder`; encode gives
(embedding, log_covariance), decode the decoder's `reconstruction`, and prior samples are
decoded N(0, I) codes, as pythae's `NormalSampler` draws them. Models whose prior is not N(0, I)
(VAMP, PoincareVAE) are measured on reconstructions only; deterministic auto-encoders (AE, RAE,
WAE) are refused. Pixel values are taken as [0, 1] (pythae's image decoders end in a sigmoid);
pass `value_range=(-1, 1)` for a model trained on [-1, 1] data.

pythae keeps the weights in `model.pt` (read by torch.load, which by default loads tensors
only) but a custom encoder or decoder as a pickle (`encoder.pkl`, `decoder.pkl`), which pythae
unpickles: load only folders you trust; varloss says so on stderr when it sees one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from varloss.errors import InputError
from varloss.models.adapters.base import ModelAdapter

__all__ = ["PythaeAdapter", "load_pythae"]

CONFIG_NAME = "model_config.json"
WEIGHTS_NAME = "model.pt"
PICKLES = ("encoder.pkl", "decoder.pkl")
# Models whose prior is not N(0, I): their prior samples are not drawn (yet).
OTHER_PRIORS = {"VAMP": "a VampPrior", "PoincareVAE": "a distribution on the Poincare ball"}


class PythaeAdapter(ModelAdapter):
    """A loaded pythae model; its inputs are reshaped to its `input_dim`, outputs to images."""

    kind = "pythae"

    def __init__(self, module: torch.nn.Module, *, input_dim: tuple[int, ...], **options) -> None:
        super().__init__(module, **options)
        self.input_dim = input_dim  # the shape pythae's encoder takes, per sample

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.module.encoder(x.reshape(x.shape[0], *self.input_dim))
        return output["embedding"], output["log_covariance"]

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        images = self.module.decoder(z)["reconstruction"]
        return images.reshape(z.shape[0], *self.image_shape)


def _check_folder(folder: Path) -> dict:
    """The folder's model_config.json, after checking the folder looks like a pythae save."""
    if not folder.is_dir():
        raise InputError(f"pythae model folder {folder} does not exist; expected a saved model.")
    config_file = folder / CONFIG_NAME
    if not config_file.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise InputError(
            f"{folder} is not a pythae model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME}, "
            "as pythae's model.save writes them)."
        )
    try:
        config = json.loads(config_file.read_text())
        name = config["name"]
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{config_file} is not a pythae model config (expected JSON with a 'name')."
        ) from None
    if not isinstance(name, str):
        raise InputError(f"{config_file} names no pythae model ('name' is {name!r}).")
    return config


def _image_shape(input_dim: tuple[int, ...], folder: Path) -> tuple[int, int, int]:
    if len(input_dim) == 3:
        return input_dim  # type: ignore[return-value]
    if len(input_dim) == 2:
        return (1, *input_dim)  # type: ignore[return-value]
    raise InputError(
        f"pythae model in {folder} takes input_dim {input_dim}; varloss measures images, "
        "expected (channels, height, width) or (height, width)."
    )


def load_pythae(
    path: str,
    *,
    device: str | torch.device = "cpu",
    value_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
) -> PythaeAdapter:
    """The pythae model saved in folder `path` as an adapter on `device`."""
    folder = Path(path)
    _check_folder(folder)
    try:
        # optional dependency (the `adapters` extra): imported only when a pythae model is used
        from pythae.models import AutoModel
    except ImportError:
        raise InputError(
            f"pythae:{path} needs the optional package pythae; install it with "
            "pip install 'varloss[adapters]'."
        ) from None
    pickles = [name for name in PICKLES if (folder / name).is_file()]
    if pickles:
        print(
            f"note: {folder} holds pickled architectures ({', '.join(pickles)}), which pythae "
            "unpickles: load only folders you trust.",
            file=sys.stderr,
        )
    try:
        model = AutoModel.load_from_folder(str(folder))
    except Exception as error:  # noqa: BLE001 - pythae's own error types, named once
        raise InputError(
            f"pythae could not load the model in {folder} ({type(error).__name__}: {error})."
        ) from None
    model = model.to(device).eval()
    input_dim = tuple(int(s) for s in model.model_config.input_dim)
    image_shape = _image_shape(input_dim, folder)
    with torch.no_grad():  # one probe image: is the posterior Gaussian?
        probe = model.encoder(torch.zeros(1, *input_dim, device=device))
    if "log_covariance" not in probe.keys():
        raise InputError(
            f"pythae model {model.model_name} in {folder} is not a VAE-family model (its encoder "
            "returns no log_covariance); expected one with a Gaussian posterior, e.g. VAE."
        )
    other_prior = OTHER_PRIORS.get(model.model_name)
    return PythaeAdapter(
        model,
        input_dim=input_dim,
        source=str(folder),
        image_shape=image_shape,
        latent_shape=(int(model.model_config.latent_dim),),
        value_range=value_range,
        generation_note=None
        if other_prior is None
        else f"pythae {model.model_name} has {other_prior} as its prior, not N(0, I), which "
        "varloss does not sample",
        batch_size=batch_size,
    )
