"""`fid_or_reason`: the one FID entry of the pipelines (train, correct, study), one error policy.

`varloss.quality.fid` computes and raises; pipelines must not fail a finished training because
the FID could not be computed, so they call `fid_or_reason`, which returns the FID dict or
None and one sentence saying why not. The policy, in one place:

- mode "off": no FID; "auto": only when the domain classifier of the data set is already
  cached (never trains one); "on": trains and caches it if needed (a bool: True = "on");
  "inception": on the FID Inception-v3 of the papers (`varloss weights fetch inception` once;
  the real statistics are cached per data set, split and weights, so they are extracted once).
- An `InputError` (images of the wrong shape, missing weights, a data set without labels...)
  becomes the reason; any other exception is a bug and propagates.
- Tensors of samples are clamped to [0, 1]: decoders may overshoot by rounding, FID sees images.
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.errors import InputError
from varloss.quality.domain import domain_extractor_available
from varloss.quality.score import fid
from varloss.variance.protocol import FID_MODES, fid_mode

# The modes and their check have one home, beside the other evaluation settings.
__all__ = ["FID_MODES", "fid_mode", "fid_or_reason"]


def fid_or_reason(
    real: Any,
    generated: Any,
    *,
    dataset: str | None,
    mode: str | bool = "auto",
    features: str = "domain",
    **options: Any,
) -> tuple[dict[str, Any] | None, str | None]:
    """(FID dict as `varloss.quality.fid` returns it, None) or (None, why there is none).

    `real`/`generated`/`options` are those of `fid`; `dataset` names the domain classifier.
    """
    mode = fid_mode(mode)
    if mode == "inception":
        features, mode = "inception", "on"
    if mode == "off":
        return None, "not computed (--fid off)"
    if mode == "auto" and features == "domain" and not domain_extractor_available(dataset):
        return None, (
            f"not computed: no cached domain classifier for {dataset!r} (train it once with "
            f"`varloss fid --real {dataset}:test ...`, or pass --fid on)"
        )
    if isinstance(generated, torch.Tensor):
        generated = generated.detach().to("cpu").clamp(0.0, 1.0)
    try:
        result = fid(
            real,
            generated,
            features=features,
            dataset=dataset,
            train_domain=mode == "on",
            **options,
        )
    except InputError as error:
        return None, str(error)
    return result, None
