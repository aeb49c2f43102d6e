"""`fid_or_reason`: the one FID entry of the pipelines (train, correct, study), one error policy.

`varloss.quality.fid` computes and raises; pipelines must not fail a finished training because
the FID could not be computed, so they call `fid_or_reason`, which returns the FID dict or
None and one sentence saying why not. The policy, in one place:

- mode "off": no FID; "auto": only when the domain classifier of the data set is already
  cached (never trains one); "on": trains and caches it if needed (a bool: True = "on");
  "inception": on the FID Inception-v3 of the papers (`varloss weights fetch inception` once;
  the real statistics are cached per data set, split and weights, so they are extracted once).
- A data set without labels (`patches`, `celeba`, an npz without a labels array) has no domain
  classifier: under "auto" and "on" the reason says so and points to --fid inception
  (`domain_fid_reason`, also what train writes when it skips the FID).
- An `InputError` (images of the wrong shape, missing weights, a data set without labels...)
  becomes the reason; any other exception is a bug and propagates.
- Tensors of samples are clamped to [0, 1]: decoders may overshoot by rounding, FID sees images.
"""

from __future__ import annotations

from typing import Any

import torch

from varloss.data import DATASETS, ImageSet
from varloss.errors import InputError
from varloss.quality.domain import domain_extractor_available, no_labels_sentence
from varloss.quality.score import fid
from varloss.variance.protocol import FID_MODES, fid_mode

# The modes and their check have one home, beside the other evaluation settings.
__all__ = ["FID_MODES", "domain_fid_reason", "fid_mode", "fid_or_reason"]


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

    `real`/`generated`/`options` are those of `fid`; `dataset` names the domain classifier. On
    Inception features KID and FID∞ are computed too unless `options` says otherwise (`varloss
    fid` prints them by default; a pipeline's Inception FID is the number compared with papers).
    """
    mode = fid_mode(mode)
    if mode == "inception":
        features, mode = "inception", "on"
    if mode == "off":
        return None, "not computed (--fid off)"
    if features == "domain" and (
        _unlabelled(real, dataset) or (mode == "auto" and not domain_extractor_available(dataset))
    ):
        return None, domain_fid_reason(real, dataset)
    if isinstance(generated, torch.Tensor):
        generated = generated.detach().to("cpu").clamp(0.0, 1.0)
    if features == "inception":  # the papers' FID comes with its less biased estimators
        options.setdefault("kid", True)
        options.setdefault("fid_infinity", True)
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


def domain_fid_reason(real: Any, dataset: str | None) -> str:
    """Why there is no FID on domain features for `dataset` (whose real images are `real`) without
    training a classifier: the set has no labels to train one on (then only --fid inception
    gives an FID), or its classifier is not cached yet."""
    if _unlabelled(real, dataset):
        return f"not computed: {no_labels_sentence(dataset, 'pass --fid inception')}"
    return (
        f"not computed: no cached domain classifier for {dataset!r} (train it once with "
        f"`varloss fid --real {dataset}:test ...`, or pass --fid on)"
    )


def _unlabelled(real: Any, dataset: str | None) -> bool:
    """Whether the real images come without labels: an ImageSet says so itself (an npz or a
    folder of the user's); a catalogue set by its entry (no classes). Unknown: False."""
    if isinstance(real, ImageSet):
        return real.labels is None
    name = (dataset or "").strip().lower()
    base, _, split = name.rpartition(":")  # "patches:test" names the set "patches"
    entry = DATASETS.get(base if base and split in ("train", "test", "valid") else name)
    return entry is not None and entry.classes is None
