"""Samplers that give a VAE's generated samples their variance back, fitted and saved.

    from varloss.samplers import TwoStageSampler, load_sampler
    sampler = TwoStageSampler().fit(model, train_images)   # scikit-learn style
    images = sampler.sample(64, torch.Generator().manual_seed(0))
    sampler.save("two-stage/")                              # safetensors + JSON, no pickles
    again = load_sampler("two-stage/", model)               # same samples for the same seed

Words, used one way throughout: a *sampler* is a class here (one module each, registered in
`SAMPLERS` by its `name`); a *method* is what `varloss correct --method` names, a registered
sampler plus settings (`METHODS`: "two-stage-raw" is the two-stage sampler without
renormalisation); a *remedy* is the prose word for any method but the baseline `prior`.

Samplers: `prior` (z ~ N(0, I), the baseline), `temperature` (z ~ N(0, tau^2 I), tau fitted to
the data's pixel variance), `gmm` (Gaussian mixture on the codes), `two-stage` (a second VAE on
the codes, renormalised to the aggregate posterior): these act on latent codes. `match` (per-pixel
affine map of decoded prior samples onto the data's moments), `ot` (the Gaussian optimal-transport
map in the data's top-K principal basis) and `spectral` (a per-channel, per-radial-frequency gain
onto the data's power spectrum) act on decoded images (`acts_on_images`), so they also apply to
reconstructions, whose MSE they raise: the price `varloss correct` reports.

A new remedy is one module here, registered with `@register`, and one entry in `METHODS`.
"""

from varloss.samplers.base import (
    CONFIG_NAME,
    FORMAT_VERSION,
    SAMPLERS,
    STATE_NAME,
    Sampler,
    load_sampler,
    read_sampler_config,
    register,
)
from varloss.samplers.gmm import GMMSampler
from varloss.samplers.image_map import ImageMapSampler
from varloss.samplers.latents import (
    SharedFit,
    aggregate_posterior_stats,
    decode_codes,
    encode_dataset,
    mean_pixel_variance,
    model_fingerprint,
    renormalize_latents,
)
from varloss.samplers.match import MatchSampler
from varloss.samplers.methods import (
    ALL_METHODS,
    BASELINE,
    METHODS,
    check_methods_fit,
    create_sampler,
    parse_methods,
)
from varloss.samplers.ot import OTSampler, gaussian_transport_map
from varloss.samplers.prior import PriorSampler
from varloss.samplers.second_stage import LatentVAE
from varloss.samplers.spectral import SpectralSampler
from varloss.samplers.temperature import TemperatureSampler
from varloss.samplers.two_stage import TwoStageSampler

__all__ = [
    "SharedFit",
    "ALL_METHODS",
    "BASELINE",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "METHODS",
    "SAMPLERS",
    "STATE_NAME",
    "GMMSampler",
    "ImageMapSampler",
    "LatentVAE",
    "MatchSampler",
    "OTSampler",
    "PriorSampler",
    "Sampler",
    "SpectralSampler",
    "TemperatureSampler",
    "TwoStageSampler",
    "aggregate_posterior_stats",
    "check_methods_fit",
    "create_sampler",
    "decode_codes",
    "encode_dataset",
    "gaussian_transport_map",
    "load_sampler",
    "mean_pixel_variance",
    "model_fingerprint",
    "parse_methods",
    "read_sampler_config",
    "register",
    "renormalize_latents",
]
