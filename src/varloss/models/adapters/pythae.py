"""`pythae:PATH`: a pythae model folder (what `model.save(PATH)` writes, e.g. a training's
`final_model/`).

varloss measures a pythae model only where it can draw codes as the model does; every other
model is refused by name, before anything is unpickled:

- **Gaussian posterior** (VAE, BetaVAE, DisentangledBetaVAE, BetaTCVAE, FactorVAE, INFOVAE_MMD,
  MSSSIM_VAE, IWAE, CIWAE, MIWAE, PIWAE, VAEGAN, Adversarial_AE, VAMP): encode gives the
  encoder's (embedding, log_covariance), a posterior draw is mu + exp(logvar / 2) * eps, decode is
  the decoder's `reconstruction`, and prior samples are decoded N(0, I) codes, as pythae's
  `NormalSampler` draws them. VAMP's prior is a VampPrior: its samples are decoded codes of the
  equal-weight mixture of the encoder's posteriors at its learned pseudo-inputs, the density it
  was trained with (`prior_note`: `correct`, whose remedies draw N(0, I) codes, refuses it).
- **Flow posterior** (VAE_IAF, VAE_LinNF): the decoder was trained on z_K = flow(z0), the Gaussian
  draw z0 = mu + sigma * eps pushed through the model's inverse autoregressive flow (`iaf_flow`)
  or its planar/radial flows (`net`), so every code drawn from the posterior goes through the
  flow, exactly as the model's own forward pass does (the same eps gives its `recon_x`). The
  `mean` protocol decodes flow(mu), its forward pass with eps = 0. Their prior is N(0, I) on z_K,
  so prior samples are decoded N(0, I) codes. encode gives the Gaussian before the flow, which
  does not describe the codes the decoder takes (`posterior_note`): `correct` refuses the
  remedies that fit those codes (two-stage, gmm) on these models.
- **Refused**: HVAE and RHVAE (their codes move by Hamiltonian steps guided by the decoder at
  each image), PoincareVAE and SVAE (codes on a manifold, not mu + sigma * eps), VQVAE (a
  codebook), the deterministic auto-encoders (AE, RAE_L2, RAE_GP, WAE_MMD) and pythae's flows
  and autoregressive models, which are not auto-encoders.

Pixel values are taken as [0, 1] (pythae's image decoders end in a sigmoid); pass
`value_range=(-1, 1)` for a model trained on [-1, 1] data. A pythae trainer's output folder (its
`*_training_<date>/` holds `final_model/` and `checkpoint_epoch_N/`) is refused with the paths of
the saved models it holds.

pythae keeps the weights in `model.pt` (read by torch.load, which by default loads tensors
only) but a custom encoder or decoder as a pickle (`encoder.pkl`, `decoder.pkl`), which pythae
unpickles: load only folders you trust; varloss says so on stderr when it sees one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from varloss.errors import InputError
from varloss.models.adapters.base import ModelAdapter

__all__ = ["PythaeAdapter", "load_pythae"]

CONFIG_NAME = "model_config.json"
WEIGHTS_NAME = "model.pt"
PICKLES = ("encoder.pkl", "decoder.pkl")
FINAL_MODEL = "final_model"  # where a pythae trainer saves the model it ends with
CHECKPOINTS = "checkpoint_epoch_*"  # and its checkpoints, beside it in `*_training_<date>/`

# What varloss knows of each pythae model, by its `model_name` (its config's name less Config).
GAUSSIAN_POSTERIORS = frozenset(
    {
        "VAE", "BetaVAE", "DisentangledBetaVAE", "BetaTCVAE", "FactorVAE", "INFOVAE_MMD",
        "MSSSIM_VAE", "IWAE", "CIWAE", "MIWAE", "PIWAE", "VAEGAN", "Adversarial_AE", "VAMP",
    }
)  # fmt: skip


def _inverse_autoregressive_flow(model: torch.nn.Module, z0: torch.Tensor) -> torch.Tensor:
    return model.iaf_flow.inverse(z0).out  # what VAE_IAF.forward decodes ("sampling")


def _linear_flows(model: torch.nn.Module, z0: torch.Tensor) -> torch.Tensor:
    for layer in model.net:  # VAE_LinNF.forward: its planar and radial flows, in order
        z0 = layer(z0).out
    return z0


# Models whose decoder takes flow(z0): the flow and how a note names it.
POSTERIOR_FLOWS: dict[str, tuple[Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], str]] = {
    "VAE_IAF": (_inverse_autoregressive_flow, "an inverse autoregressive flow"),
    "VAE_LinNF": (_linear_flows, "planar/radial flows"),
}


def _vamp_prior_codes(
    model: torch.nn.Module, n: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """n codes of VAMP's prior: the mixture, with equal weights, of the encoder's posteriors at
    its learned pseudo-inputs (the density VAMP._log_p_z trains with)."""
    components = model.number_components
    pseudo = model.pseudo_inputs(model.idle_input.to(next(model.parameters()).device))
    posterior = model.encoder(pseudo.reshape(components, *model.model_config.input_dim))
    mu, logvar = (posterior[key].to(device) for key in ("embedding", "log_covariance"))
    chosen = torch.randint(components, (n,), generator=generator, device=device)
    eps = torch.randn(n, mu.shape[1], generator=generator, device=device, dtype=mu.dtype)
    return mu[chosen] + torch.exp(0.5 * logvar[chosen]) * eps


# Models whose prior is not N(0, I): how to draw it, and how a note names it.
OTHER_PRIORS: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "VAMP": (_vamp_prior_codes, "a VampPrior (a mixture of its posteriors at pseudo-inputs)"),
}
_DETERMINISTIC = "is a deterministic auto-encoder, with no posterior to draw codes from"
_NOT_AUTOENCODER = "is a normalizing flow or autoregressive model, not an auto-encoder"
REFUSED = {
    "HVAE": "moves each posterior code by Hamiltonian leapfrog steps guided by the decoder at "
    "the image, which varloss does not run",
    "RHVAE": "moves each posterior code by Riemannian Hamiltonian steps guided by the decoder "
    "at the image, which varloss does not run",
    "PoincareVAE": "draws its codes from a distribution on the Poincare ball, not as "
    "mu + sigma * eps",
    "SVAE": "draws its codes from a von Mises-Fisher distribution on the hypersphere, not as "
    "mu + sigma * eps",
    "VQVAE": "quantises its codes to a codebook, with no Gaussian posterior",
    **dict.fromkeys(("AE", "RAE_L2", "RAE_GP", "WAE_MMD"), _DETERMINISTIC),
    **dict.fromkeys(
        ("MAF", "IAF", "PlanarFlow", "RadialFlow", "MADE", "PixelCNN"), _NOT_AUTOENCODER
    ),
}


class PythaeAdapter(ModelAdapter):
    """A loaded pythae model; its inputs are reshaped to its `input_dim`, outputs to images,
    posterior draws pushed through its flow where it has one (VAE_IAF, VAE_LinNF) and prior
    codes drawn from its own prior where that is not N(0, I) (VAMP)."""

    kind = "pythae"

    def __init__(self, module: torch.nn.Module, *, input_dim: tuple[int, ...], **options) -> None:
        name = getattr(module, "model_name", "")
        flow, prior = POSTERIOR_FLOWS.get(name), OTHER_PRIORS.get(name)
        if flow is not None:
            options.setdefault(
                "posterior_note",
                f"pythae {name} decodes its posterior draws after {flow[1]}, so its encoder's "
                "(mu, logvar) do not describe the codes its decoder takes",
            )
        if prior is not None:
            options.setdefault("prior_note", f"pythae {name} has {prior[1]} as its prior")
        super().__init__(module, **options)
        self.input_dim = input_dim  # the shape pythae's encoder takes, per sample
        self.flow = None if flow is None else flow[0]
        self.prior = None if prior is None else prior[0]

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.module.encoder(x.reshape(x.shape[0], *self.input_dim))
        return output["embedding"], output["log_covariance"]

    def _posterior_flow(self, z0: torch.Tensor) -> torch.Tensor:
        return z0 if self.flow is None else self.flow(self.module, z0)

    def _prior_codes(
        self, n: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        if self.prior is None:
            return super()._prior_codes(n, generator, device)
        return self.prior(self.module, n, generator, device)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        images = self.module.decoder(z)["reconstruction"]
        return images.reshape(z.shape[0], *self.image_shape)


def model_name(config_name: str) -> str:
    """The pythae model a config's `name` is for: "VAE_IAF_Config" -> "VAE_IAF"."""
    return config_name.removesuffix("Config").removesuffix("_")


def check_measurable(name: str, folder: Path) -> None:
    """Refuse, in one sentence naming the class, a pythae model varloss cannot measure right."""
    known = "VAE, BetaVAE, IWAE, ... with a Gaussian posterior, or VAE_IAF and VAE_LinNF"
    if name in GAUSSIAN_POSTERIORS or name in POSTERIOR_FLOWS:
        return
    if name in REFUSED:
        raise InputError(
            f"pythae {name} in {folder} cannot be measured right by varloss: it {REFUSED[name]} "
            f"(varloss measures {known})."
        )
    raise InputError(
        f"pythae model {name!r} in {folder} is not one varloss knows how to measure (expected "
        f"{known})."
    )


def _is_saved_model(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def _saved_models_in(folder: Path, pattern: str) -> list[Path]:
    """The saved models named `pattern` in a pythae trainer's output: in `folder` itself (a
    `*_training_<date>/` folder) or one level down (the trainer's `output_dir`), sorted."""
    found = [*folder.glob(pattern), *folder.glob(f"*/{pattern}")]
    return sorted(path for path in found if path.is_dir() and _is_saved_model(path))


def _refuse_training_folder(folder: Path) -> None:
    """A pythae trainer's folder is refused with the saved models it holds (its final_model/
    first): a training may have written several, and varloss does not guess which is meant."""
    finals = _saved_models_in(folder, FINAL_MODEL)
    checkpoints = _saved_models_in(folder, CHECKPOINTS)
    if finals:
        where = ", ".join(f"pythae:{path}" for path in finals)
        one = "its model is in final_model/: pass" if len(finals) == 1 else "pass one of"
        raise InputError(f"{folder} is a pythae training folder, not a saved model; {one} {where}.")
    if checkpoints:
        where = ", ".join(f"pythae:{path}" for path in checkpoints)
        raise InputError(
            f"{folder} is a pythae training folder without a final_model/ (has the training "
            f"finished?); pass a checkpoint instead: {where}."
        )


def _check_folder(folder: Path) -> dict:
    """The folder's model_config.json, after checking the folder looks like a pythae save."""
    if not folder.is_dir():
        raise InputError(f"pythae model folder {folder} does not exist; expected a saved model.")
    config_file = folder / CONFIG_NAME
    if not _is_saved_model(folder):
        _refuse_training_folder(folder)
        raise InputError(
            f"{folder} is not a pythae model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME}, "
            f"as pythae's model.save writes them, or a trainer's {FINAL_MODEL}/)."
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
    check_measurable(model_name(_check_folder(folder)["name"]), folder)  # before any unpickling
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
    check_measurable(model.model_name, folder)
    with torch.no_grad():  # one probe image: does the (custom) encoder give a Gaussian?
        probe = model.encoder(torch.zeros(1, *input_dim, device=device))
    if "log_covariance" not in probe.keys():
        raise InputError(
            f"pythae {model.model_name} in {folder} has an encoder that returns no "
            "log_covariance; varloss needs its Gaussian posterior (embedding, log_covariance)."
        )
    return PythaeAdapter(
        model,
        input_dim=input_dim,
        source=str(folder),
        image_shape=image_shape,
        latent_shape=(int(model.model_config.latent_dim),),
        value_range=value_range,
        batch_size=batch_size,
    )
