"""Deprecated: the samplers live in `varloss.samplers`, `correct` in `varloss.pipelines.correct`.

    from varloss.samplers import TwoStageSampler, load_sampler   # instead of varloss.remedies
    from varloss.pipelines.correct import correct

This module re-exports the old names so existing code keeps working, with a DeprecationWarning.
"""

from __future__ import annotations

import warnings

from varloss.pipelines.correct import correct, gap_closed, method_table
from varloss.samplers import (
    ALL_METHODS,
    CONFIG_NAME,
    FORMAT_VERSION,
    METHODS,
    SAMPLERS,
    STATE_NAME,
    GMMSampler,
    LatentVAE,
    MatchSampler,
    PriorSampler,
    Sampler,
    TemperatureSampler,
    TwoStageSampler,
    aggregate_posterior_stats,
    create_sampler,
    decode_codes,
    encode_dataset,
    load_sampler,
    mean_pixel_variance,
    model_fingerprint,
    parse_methods,
    register,
    renormalize_latents,
)

warnings.warn(
    "varloss.remedies is deprecated; use varloss.samplers (and varloss.pipelines.correct)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "ALL_METHODS",
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
    "correct",
    "create_sampler",
    "decode_codes",
    "encode_dataset",
    "gap_closed",
    "load_sampler",
    "mean_pixel_variance",
    "method_table",
    "model_fingerprint",
    "parse_methods",
    "register",
    "renormalize_latents",
]
