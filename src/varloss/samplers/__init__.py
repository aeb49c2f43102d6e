"""Samplers that give a VAE's generated samples their variance back, fitted and saved.

    from varloss.samplers import TwoStageSampler, load_sampler
    sampler = TwoStageSampler().fit(model, train_images)   # scikit-learn style
    images = sampler.sample(64, torch.Generator().manual_seed(0))
    sampler.save("two-stage/")                              # safetensors + JSON, no pickles
    again = load_sampler("two-stage/", model)               # same samples for the same seed

Registry `SAMPLERS` (one module each): `prior` (z ~ N(0, I), the baseline), `temperature`
(z ~ N(0, tau^2 I), tau fitted to the data's pixel variance), `match` (per-pixel affine map of
prior samples onto the data's moments), `gmm` (Gaussian mixture on the codes), `two-stage` (a
second VAE on the codes, renormalised to the aggregate posterior). `METHODS` names the variants
`varloss correct` compares.
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
from varloss.samplers.latents import (
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
from varloss.samplers.prior import PriorSampler
from varloss.samplers.temperature import TemperatureSampler
from varloss.samplers.two_stage import LatentVAE, TwoStageSampler

__all__ = [
    "ALL_METHODS",
    "BASELINE",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "METHODS",
    "SAMPLERS",
    "STATE_NAME",
    "GMMSampler",
    "LatentVAE",
    "MatchSampler",
    "PriorSampler",
    "Sampler",
    "TemperatureSampler",
    "TwoStageSampler",
    "aggregate_posterior_stats",
    "check_methods_fit",
    "create_sampler",
    "decode_codes",
    "encode_dataset",
    "load_sampler",
    "mean_pixel_variance",
    "model_fingerprint",
    "parse_methods",
    "read_sampler_config",
    "register",
    "renormalize_latents",
]
