"""Sample quality: FID with recorded feature extractors, its decomposition, precision/recall.

    from varloss.quality import fid
    result = fid("mnist:test", samples, features="domain")   # JSON-safe dict
    result["fid"], result["terms"], result["trace_ratio"]

Pipelines call `fid_or_reason` (one error policy: the FID dict, or None and why not).
`frechet_distance` works on any (mean, covariance) pairs; `FeatureStatistics` accumulates them
in float64 and merges exactly; `get_extractor` gives a registered extractor ("domain": a small
classifier trained by varloss, offline; "inception": the FID Inception-v3 of the papers, its
weights cached by `fetch_weights("inception")` or given by path, resized as TTUR does or, with
`resize="pil-bicubic"`, as clean-fid does; yours through
`register_extractor`) or wraps any nn.Module. Beside FID: KID (`kid.py`), FID∞
(`fid_infinity.py`), and PSNR/SSIM/rFID of reconstructions (`reconstruction.py`).
"""

from varloss.quality.domain import (
    DomainExtractor,
    domain_extractor_available,
    load_domain_classifier,
    train_domain_classifier,
)
from varloss.quality.extractors import FeatureExtractor, ModuleExtractor
from varloss.quality.frechet import FrechetTerms, frechet_distance
from varloss.quality.inception import (
    INCEPTION_WEIGHTS_NAME,
    INCEPTION_WEIGHTS_SHA256,
    InceptionExtractor,
    pil_bicubic_resize,
    recognise_weights,
    tf1_bilinear_resize,
)
from varloss.quality.policy import FID_MODES, domain_fid_reason, fid_mode, fid_or_reason
from varloss.quality.prdc import density_coverage, prdc, precision_recall
from varloss.quality.registry import (
    EXTRACTORS,
    extractor_names,
    get_extractor,
    register_extractor,
)
from varloss.quality.score import feature_statistics, fid, reference_statistics
from varloss.quality.statistics import FeatureStatistics, FrechetDistance
from varloss.quality.weights import WEIGHTS, cached_weights, fetch_weights, list_weights

__all__ = [
    "EXTRACTORS",
    "FID_MODES",
    "INCEPTION_WEIGHTS_NAME",
    "INCEPTION_WEIGHTS_SHA256",
    "DomainExtractor",
    "FeatureExtractor",
    "FeatureStatistics",
    "FrechetDistance",
    "FrechetTerms",
    "InceptionExtractor",
    "ModuleExtractor",
    "density_coverage",
    "domain_extractor_available",
    "domain_fid_reason",
    "extractor_names",
    "feature_statistics",
    "fid",
    "fid_mode",
    "fid_or_reason",
    "frechet_distance",
    "get_extractor",
    "load_domain_classifier",
    "prdc",
    "precision_recall",
    "register_extractor",
    "train_domain_classifier",
    "WEIGHTS",
    "cached_weights",
    "fetch_weights",
    "list_weights",
    "pil_bicubic_resize",
    "recognise_weights",
    "reference_statistics",
    "tf1_bilinear_resize",
]
