"""Fréchet distance, streaming feature statistics, PRDC and fid() against independent references."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from varloss.errors import InputError
from varloss.quality import (
    INCEPTION_WEIGHTS_NAME,
    INCEPTION_WEIGHTS_SHA256,
    FeatureStatistics,
    FrechetDistance,
    density_coverage,
    fid,
    frechet_distance,
    get_extractor,
    precision_recall,
)
from varloss.quality.statistics import merge_packed


def random_covariance(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or 2 * d))
    return a @ a.T / a.shape[1]


def scipy_fid(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


@pytest.mark.parametrize("d", [2, 10, 64, 128])
def test_frechet_matches_scipy_sqrtm(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.3
    s1, s2 = random_covariance(rng, d), 0.5 * random_covariance(rng, d)
    terms = frechet_distance(mu1, s1, mu2, s2)
    reference = scipy_fid(mu1, s1, mu2, s2)
    assert terms.fid == pytest.approx(reference, rel=1e-6)
    assert terms.mean_term == pytest.approx(float((mu1 - mu2) @ (mu1 - mu2)), rel=1e-12)
    assert terms.trace_real == pytest.approx(np.trace(s1), rel=1e-12)
    assert terms.trace_generated == pytest.approx(np.trace(s2), rel=1e-12)
    recombined = terms.mean_term + terms.trace_real + terms.trace_generated - terms.cross_term
    assert recombined == pytest.approx(terms.fid, rel=1e-12)
    assert terms.trace_ratio == pytest.approx(np.trace(s2) / np.trace(s1), rel=1e-12)


def test_frechet_accepts_torch_and_rank_deficient() -> None:
    rng = np.random.default_rng(3)
    d = 30
    s1, s2 = random_covariance(rng, d, rank=5), random_covariance(rng, d, rank=8)
    mu = rng.normal(size=d)
    ours = frechet_distance(torch.from_numpy(mu), torch.from_numpy(s1), mu, s2).fid
    assert ours == pytest.approx(scipy_fid(mu, s1, mu, s2), rel=1e-6)


def test_identical_statistics_give_zero() -> None:
    rng = np.random.default_rng(0)
    s = random_covariance(rng, 50)
    mu = rng.normal(size=50)
    terms = frechet_distance(mu, s, mu, s)
    assert abs(terms.fid) < 1e-9 * np.trace(s)
    assert terms.trace_ratio == pytest.approx(1.0)


def test_known_mean_shift_and_covariance_scaling() -> None:
    rng = np.random.default_rng(1)
    d = 16
    s = random_covariance(rng, d)
    mu = rng.normal(size=d)
    shift = rng.normal(size=d)
    assert frechet_distance(mu, s, mu + shift, s).fid == pytest.approx(shift @ shift, rel=1e-9)
    # S_gen = c^2 S: Tr sqrt(S c^2 S) = c Tr S, so FD = (1 - c)^2 Tr S
    c = 0.6
    terms = frechet_distance(mu, s, mu, c * c * s)
    assert terms.fid == pytest.approx((1 - c) ** 2 * np.trace(s), rel=1e-9)
    assert terms.trace_ratio == pytest.approx(c * c, rel=1e-12)


def test_frechet_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputError, match="d x d"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_statistics_batch_size_independent_and_match_numpy() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(loc=1000.0, scale=2.0, size=(503, 7))  # large mean: Chan keeps precision
    reference_cov = np.cov(x, rowvar=False)
    for batch in (1, 10, 64, 503):
        stats = FeatureStatistics()
        for start in range(0, x.shape[0], batch):
            stats.update(x[start : start + batch])
        assert stats.count == 503
        np.testing.assert_allclose(stats.mean.numpy(), x.mean(0), rtol=1e-13)
        np.testing.assert_allclose(stats.covariance().numpy(), reference_cov, rtol=1e-9, atol=1e-11)


def test_merge_equals_one_shot_and_packed_reduction() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 5)) * np.arange(1, 6)
    one_shot = FeatureStatistics().update(x)
    parts = [FeatureStatistics().update(x[a:b]) for a, b in ((0, 17), (17, 200), (200, 300))]
    merged = FeatureStatistics()
    for part in parts:
        merged.merge(part)
    np.testing.assert_allclose(merged.mean.numpy(), one_shot.mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(merged.m2.numpy(), one_shot.m2.numpy(), rtol=1e-12)
    # the DDP reduction: gathered packed states (W x L) merge into the one-shot state
    reduced = FeatureStatistics.from_packed(
        merge_packed(torch.stack([p.to_packed() for p in parts]))
    )
    assert reduced.count == 300
    np.testing.assert_allclose(reduced.covariance().numpy(), np.cov(x, rowvar=False), rtol=1e-12)


def test_statistics_save_load_roundtrip(tmp_path) -> None:
    stats = FeatureStatistics().update(np.random.default_rng(5).normal(size=(20, 3)))
    stats.save(tmp_path / "s.safetensors", {"note": "x"})
    loaded = FeatureStatistics.load(tmp_path / "s.safetensors")
    assert loaded.count == 20
    assert torch.equal(loaded.m2, stats.m2)
    assert json.loads((tmp_path / "s.json").read_text())["note"] == "x"


def test_frechet_metric_matches_direct() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(200, 4)), rng.normal(loc=0.5, size=(150, 4))
    metric = FrechetDistance(4)
    for start in range(0, 200, 64):
        metric.update(real=torch.from_numpy(a[start : start + 64]))
    metric.update(generated=torch.from_numpy(b))
    out = metric.compute()
    reference = scipy_fid(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert out["fid"] == pytest.approx(reference, rel=1e-6)


# ---- precision / recall / density / coverage ----


def brute_prdc(x: np.ndarray, y: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    def radii(a: np.ndarray, k: int) -> np.ndarray:
        dist = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(dist, axis=1)[:, k]

    d = np.linalg.norm(x[:, None] - y[None], axis=-1)  # real x generated
    r_pr, r_gen, r_dc = radii(x, k_pr), radii(y, k_pr), radii(x, k_dc)
    return {
        "precision": float((d < r_pr[:, None]).any(0).mean()),
        "recall": float((d < r_gen[None, :]).any(1).mean()),
        "density": float((d < r_dc[:, None]).sum(0).mean() / k_dc),
        "coverage": float((d.min(1) < r_dc).mean()),
    }


def test_prdc_identical_far_and_reference() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 6))
    same = precision_recall(x, x, k=3) | density_coverage(x, x, k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = precision_recall(x, x + 100.0, k=3) | density_coverage(x, x + 100.0, k=5)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    assert far["density"] == 0.0 and far["coverage"] == 0.0
    y = rng.normal(loc=0.7, scale=0.8, size=(90, 6))
    expected = brute_prdc(x, y, 3, 5)
    for block in (7, 1024):
        got = precision_recall(x, y, k=3, block=block) | density_coverage(x, y, k=5, block=block)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-12), key
    assert 0.0 < expected["precision"] < 1.0 and 0.0 < expected["recall"] < 1.0


def test_prdc_rejects_k_too_large() -> None:
    with pytest.raises(InputError, match="k"):
        precision_recall(np.zeros((3, 2)), np.ones((3, 2)), k=3)


# ---- extractors and fid() ----


class FixedProjection(nn.Module):
    """A fixed random projection of the flattened image: a tiny deterministic extractor."""

    def __init__(self, pixels: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(pixels, dim, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


def test_fid_with_module_matches_manual_reference(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 6, 6, generator=gen)
    generated = (0.5 + 0.5 * (torch.rand(200, 1, 6, 6, generator=gen) - 0.5)).clamp(0, 1)
    module = FixedProjection(36, 8)
    result = fid(real, generated.numpy(), features=module, batch_size=64)
    json.dumps(result, allow_nan=False)
    with torch.no_grad():
        fr, fg = module(real).double().numpy(), module(generated).double().numpy()
    reference = scipy_fid(
        fr.mean(0), np.cov(fr, rowvar=False), fg.mean(0), np.cov(fg, rowvar=False)
    )
    assert result["fid"] == pytest.approx(reference, rel=1e-6)
    assert result["n_real"] == 300 and result["n_generated"] == 200
    assert result["trace_ratio"] == pytest.approx(
        np.trace(np.cov(fg, rowvar=False)) / np.trace(np.cov(fr, rowvar=False)), rel=1e-9
    )
    assert result["trace_ratio"] < 0.5  # the generated set was shrunk to a quarter of the variance
    assert result["extractor"]["feature_dim"] == 8
    # the weights identity follows the weights, not the object
    twin = FixedProjection(36, 8)
    assert (
        fid(real, generated, features=twin)["extractor"]["weights_hash"]
        == (result["extractor"]["weights_hash"])
    )
    with torch.no_grad():
        twin.weight.mul_(2.0)
    assert (
        fid(real, generated, features=twin)["extractor"]["weights_hash"]
        != (result["extractor"]["weights_hash"])
    )
    assert result["warnings"] == []
    # batch size does not change the number
    again = fid(real, generated, features=module, batch_size=7)
    assert again["fid"] == pytest.approx(result["fid"], rel=1e-10)


def test_fid_warns_when_fewer_samples_than_features(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(1)
    real, generated = torch.rand(20, 1, 6, 6, generator=gen), torch.rand(20, 1, 6, 6, generator=gen)
    with pytest.warns(UserWarning, match="fewer than the feature dimension 36"):
        result = fid(real, generated, features=nn.Flatten())
    assert len(result["warnings"]) == 2


def test_fid_caches_real_statistics_of_named_sets(tmp_path, monkeypatch) -> None:
    from varloss.data import ImageSet

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(2)
    real = ImageSet(torch.rand(64, 1, 4, 4, generator=gen), None, "toy", "test")
    generated = torch.rand(50, 1, 4, 4, generator=gen) * 0.5
    first = fid(real, generated, features=nn.Flatten())
    second = fid(real, generated, features=nn.Flatten())
    assert not first["settings"]["real_statistics_cached"]
    assert second["settings"]["real_statistics_cached"]
    assert second["fid"] == first["fid"]
    assert len(list((tmp_path / "fid-stats").glob("toy-test-*/statistics.safetensors"))) == 1
    changed = ImageSet(real.images * 0.9, None, "toy", "test")  # same name, other pixels
    assert not fid(changed, generated, features=nn.Flatten())["settings"]["real_statistics_cached"]


def test_fid_rejects_bad_inputs(tmp_path) -> None:
    with pytest.raises(InputError, match="same shape"):
        fid(torch.rand(5, 1, 4, 4), torch.rand(5, 1, 5, 5), features=nn.Flatten())
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        fid(torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4) * 255, features=nn.Flatten())
    with pytest.raises(InputError, match="neither an existing path nor a data set"):
        fid(str(tmp_path / "missing.npy"), torch.rand(5, 1, 4, 4), features=nn.Flatten())
    with pytest.raises(InputError, match="dataset"):
        get_extractor("domain")


def test_inception_missing_weights_names_file_and_hash(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VARLOSS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(InputError) as error:
        get_extractor("inception")
    message = str(error.value)
    assert INCEPTION_WEIGHTS_NAME in message and INCEPTION_WEIGHTS_SHA256 in message
    assert message.count(". ") == 0  # one sentence
    with pytest.raises(InputError, match="does not exist"):
        get_extractor("inception", weights=tmp_path / "nope.pth")
    wrong = tmp_path / INCEPTION_WEIGHTS_NAME
    wrong.write_bytes(b"not the weights")
    with pytest.raises(InputError, match="SHA-256"):
        get_extractor("inception", weights=wrong)


def test_uint8_and_channel_last_inputs_are_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    rng = np.random.default_rng(8)
    pixels = rng.integers(0, 256, size=(40, 5, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "g.npy", pixels)
    as_float = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_file = fid(as_float, str(tmp_path / "g.npy"), features=nn.Flatten())
    assert from_file["fid"] == pytest.approx(0.0, abs=1e-9)


# ---- the extractor registry and the pipelines' FID entry ----


def test_registered_extractor_is_used_by_name_and_checked(
    tmp_path, monkeypatch, registered
) -> None:
    from varloss.quality import EXTRACTORS, ModuleExtractor, register_extractor

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    calls = []

    def flatten_factory(*, batch_size, device, **rest):
        calls.append(rest)
        return ModuleExtractor(nn.Flatten(), name="flat", batch_size=batch_size, device=device)

    registered(EXTRACTORS, "flat", flatten_factory)
    gen = torch.Generator().manual_seed(3)
    real, generated = torch.rand(50, 1, 2, 2, generator=gen), torch.rand(40, 1, 2, 2, generator=gen)
    result = fid(real, generated, features="flat", dataset="toy")
    fr, fg = real.flatten(1).double().numpy(), generated.flatten(1).double().numpy()
    reference = scipy_fid(
        fr.mean(0), np.cov(fr, rowvar=False), fg.mean(0), np.cov(fg, rowvar=False)
    )
    assert result["fid"] == pytest.approx(reference, rel=1e-6)
    assert result["extractor"]["name"] == "flat" and calls[0]["dataset"] == "toy"
    register_extractor("flat", flatten_factory)  # the same factory again: a no-op
    with pytest.raises(InputError, match="feature extractor 'flat' is already registered"):
        register_extractor("flat", lambda **options: None)
    with pytest.raises(InputError, match="callable"):
        register_extractor("other", "not a factory")
    with pytest.raises(InputError, match="lower-case"):
        register_extractor("Flat", flatten_factory)
    with pytest.raises(InputError, match="unknown feature extractor 'nope'; known: domain, incep"):
        get_extractor("nope")


def test_fid_or_reason_policy(tmp_path, monkeypatch) -> None:
    import varloss.quality.policy as policy
    from varloss.quality import fid_or_reason

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    real = torch.rand(30, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    overshoot = real * 1.5 - 0.25  # a decoder's rounding: outside [0, 1], clamped for the FID
    assert fid_or_reason(real, real, dataset="toy", mode="off") == (
        None,
        "not computed (--fid off)",
    )
    result, reason = fid_or_reason(real, real, dataset="digits", mode=False)
    assert result is None and "--fid off" in reason
    result, reason = fid_or_reason(real, real, dataset="digits", mode="auto")
    assert result is None and "no cached domain classifier for 'digits'" in reason
    # a registered or module extractor runs in "auto" (nothing to train)
    result, reason = fid_or_reason(real, overshoot, dataset=None, features=nn.Flatten())
    clamped = fid(real, overshoot.clamp(0, 1), features=nn.Flatten())
    assert reason is None and result["fid"] == pytest.approx(clamped["fid"], rel=1e-12)
    # the user's mistakes become the reason; bugs propagate
    other_shape = torch.rand(30, 1, 4, 4)
    result, reason = fid_or_reason(real, other_shape, dataset=None, features=nn.Flatten())
    assert result is None and "same shape" in reason

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(policy, "fid", broken)
    with pytest.raises(ZeroDivisionError):
        fid_or_reason(real, real, dataset=None, features=nn.Flatten(), mode="on")
    with pytest.raises(InputError, match="auto, on, off"):
        fid_or_reason(real, real, dataset=None, mode="sometimes")


def test_a_set_without_labels_has_no_domain_fid_and_is_pointed_to_inception(tmp_path, monkeypatch):
    """patches (a catalogue set without classes) and an ImageSet without labels: no domain
    classifier can exist, so "auto" and "on" both say so and name --fid inception; a labelled
    set still gets the no-cached-classifier reason, and an ImageSet's own labels decide."""
    from varloss.data import ImageSet
    from varloss.quality import domain_fid_reason, fid_or_reason

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    real = torch.rand(30, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    unlabelled = (
        "not computed: 'patches' has no labels, so varloss has no domain classifier for it; pass "
        "--fid inception for the FID of the papers (fetch its weights once with `varloss "
        "weights fetch inception`)"
    )
    for dataset in ("patches", "Patches:test"):
        for mode in ("auto", "on", True):
            result, reason = fid_or_reason(real, real, dataset=dataset, mode=mode)
            assert result is None and reason == unlabelled.replace("'patches'", repr(dataset))
    npz = "npz:/data/mine.npz"
    bare = ImageSet(real, None, npz, "test")
    labelled = ImageSet(real, torch.arange(30) % 3, npz, "test")
    assert fid_or_reason(bare, real, dataset=npz, mode="on") == (
        None,
        unlabelled.replace("'patches'", repr(npz)),
    )
    assert domain_fid_reason(bare, npz) == unlabelled.replace("'patches'", repr(npz))
    assert domain_fid_reason(labelled, npz) == (
        f"not computed: no cached domain classifier for {npz!r} (train it once with "
        f"`varloss fid --real {npz}:test ...`, or pass --fid on)"
    )
    # a labelled ImageSet of a set the catalogue calls unlabelled: its labels win
    assert "no cached domain classifier" in domain_fid_reason(labelled, "patches")
    assert "no cached domain classifier" in fid_or_reason(real, real, dataset="digits")[1]
    # other features than the domain classifier's are not affected by labels
    result, reason = fid_or_reason(bare, real, dataset=npz, features=nn.Flatten(), mode="on")
    assert reason is None and result["fid"] == pytest.approx(0.0, abs=1e-9)


def test_a_factory_written_before_resize_existed_still_works(registered) -> None:
    """A plugin factory with an explicit keyword list and no `resize` (the registry's docstring
    example) is called as before; asking it for a resize is one sentence, not a TypeError."""
    from varloss.quality import EXTRACTORS, ModuleExtractor

    def strict_factory(*, dataset, weights, batch_size, device, train, progress):
        return ModuleExtractor(nn.Flatten(), name="strict", batch_size=batch_size, device=device)

    registered(EXTRACTORS, "strict", strict_factory)
    assert get_extractor("strict").name == "strict"
    with pytest.raises(InputError, match="cannot apply to the extractor 'strict'"):
        get_extractor("strict", resize="pil-bicubic")


def test_the_fid_command_says_a_small_sample_warning_once(
    tmp_path, monkeypatch, capsys, registered
) -> None:
    from test_cli import invoke

    from varloss.quality import EXTRACTORS, ModuleExtractor

    def flatten_factory(*, batch_size, device, **rest):
        return ModuleExtractor(nn.Flatten(), name="flat", batch_size=batch_size, device=device)

    registered(EXTRACTORS, "flat", flatten_factory)
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(3)
    for name, count in (("real", 50), ("generated", 20)):  # 36 features: generated is too few
        np.save(tmp_path / f"{name}.npy", torch.rand(count, 1, 6, 6, generator=gen).numpy())
    args = ["fid", "--real", tmp_path / "real.npy", "--generated", tmp_path / "generated.npy"]
    with warnings.catch_warnings(record=True) as raised:  # what Python would print as well
        warnings.simplefilter("always")
        code, out, err = invoke(monkeypatch, capsys, *args, "--features", "flat", "--no-kid")
    assert code == 0, err
    said = out + err + "".join(str(warning.message) for warning in raised)
    assert said.count("fewer than the feature dimension 36") == 1
