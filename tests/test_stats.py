"""varloss.stats against numpy: variances, MSE, the decomposition, split independence, precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from varloss.stats import (
    MomentAccumulator,
    PairedMomentAccumulator,
    chan_merge,
    channel_means,
    feature_mean,
)


def _pair(rng: np.random.Generator, n: int = 600, d: int = 40) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((n, d))
    y = 0.6 * x + 0.2 * rng.random((n, d)) + 0.05
    return x, y


def _random_splits(rng: np.random.Generator, n: int, pieces: int) -> list[np.ndarray]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=pieces - 1, replace=False))
    return np.split(rng.permutation(n), cuts)  # random membership, random sizes


def test_single_set_matches_numpy_population_variance() -> None:
    x = np.random.default_rng(0).normal(size=(333, 17))
    acc = MomentAccumulator().update(x)
    np.testing.assert_allclose(acc.variance().numpy(), np.var(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(acc.mean.numpy(), x.mean(axis=0), rtol=1e-12)
    assert acc.count == 333


def test_paired_terms_match_numpy_and_decomposition_holds() -> None:
    x, y = _pair(np.random.default_rng(1))
    terms = {k: feature_mean(v) for k, v in PairedMomentAccumulator().update(x, y).terms().items()}
    assert terms["var_real"] == pytest.approx(np.var(x, axis=0).mean(), rel=1e-12)
    assert terms["var_reconstructed"] == pytest.approx(np.var(y, axis=0).mean(), rel=1e-12)
    assert terms["mse"] == pytest.approx(((x - y) ** 2).mean(), rel=1e-12)
    assert terms["bias2"] == pytest.approx(((x - y).mean(axis=0) ** 2).mean(), rel=1e-12)
    cov = ((y - y.mean(0)) * ((x - y) - (x - y).mean(0))).mean(0)
    assert terms["cov_term"] == pytest.approx(2 * cov.mean(), rel=1e-10)
    loss = np.var(x, axis=0).mean() - np.var(y, axis=0).mean()
    assert terms["variance_loss_reconstructed"] == pytest.approx(loss, rel=1e-12)
    # the decomposition itself, all in numpy: var(x) - var(y) = mse - bias^2 + 2 cov(y, x - y)
    numpy_terms = ((x - y) ** 2).mean() - ((x - y).mean(axis=0) ** 2).mean() + 2 * cov.mean()
    assert loss == pytest.approx(numpy_terms, rel=1e-10)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_result_does_not_depend_on_the_split_or_merge_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = _pair(rng)
    whole = PairedMomentAccumulator().update(x, y)
    parts = []
    for index in _random_splits(rng, len(x), 7):
        part = PairedMomentAccumulator()
        for sub in np.array_split(index, rng.integers(1, 4)):
            part.update(x[sub], y[sub])
        parts.append(part)
    merged = PairedMomentAccumulator()
    for i in rng.permutation(len(parts)):
        merged.merge(parts[i])
    for key, value in whole.terms().items():
        np.testing.assert_allclose(
            merged.terms()[key].numpy(), value.numpy(), rtol=1e-9, atol=1e-15
        )
    assert merged.count == len(x)


def test_float32_with_a_large_offset_is_exact_where_a_naive_float32_sum_fails() -> None:
    rng = np.random.default_rng(5)
    x = (1000.0 + 0.01 * rng.normal(size=(20000, 8))).astype(np.float32)
    reference = np.var(x.astype(np.float64), axis=0).mean()
    # the textbook one-pass formula E[x^2] - E[x]^2 in float32 loses every digit here
    naive = (
        np.mean(x * x, axis=0, dtype=np.float32) - np.mean(x, axis=0, dtype=np.float32) ** 2
    ).mean()
    assert abs(naive - reference) / reference > 0.5
    acc = MomentAccumulator()
    for chunk in np.array_split(x, 13):
        acc.update(chunk)
    assert feature_mean(acc.variance()) == pytest.approx(reference, rel=1e-9)


def test_pca_reconstruction_loses_exactly_its_mse() -> None:
    """PCA projects orthogonally: variance loss == MSE, no bias and no covariance term."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    x = load_digits().data / 16.0
    pca = PCA(n_components=12).fit(x)
    y = pca.inverse_transform(pca.transform(x))
    terms = {k: feature_mean(v) for k, v in PairedMomentAccumulator().update(x, y).terms().items()}
    assert terms["variance_loss_reconstructed"] == pytest.approx(terms["mse"], rel=1e-9)
    assert abs(terms["bias2"]) < 1e-20
    assert abs(terms["cov_term"]) < 1e-12


def test_memory_is_per_feature_and_inputs_of_any_dtype_accumulate_in_float64() -> None:
    acc = PairedMomentAccumulator()
    for _ in range(3):
        batch = torch.rand(50, 2, 3, 3, dtype=torch.float16)
        acc.update(batch, batch * 0.5)
    assert acc.real.mean.shape == (18,) and acc.comoment.shape == (18,)
    assert acc.real.mean.dtype == torch.float64 and acc.comoment.dtype == torch.float64


def test_channel_means_break_down_c_h_w() -> None:
    values = torch.arange(12, dtype=torch.float64)
    assert channel_means(values, (3, 2, 2)) == [1.5, 5.5, 9.5]
    assert channel_means(values, (12,)) is None


def test_mismatched_pairs_and_merges_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ"):
        PairedMomentAccumulator().update(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="features"):
        MomentAccumulator().update(np.zeros((4, 3))).merge(
            MomentAccumulator().update(np.zeros((4, 2)))
        )


@pytest.mark.parametrize("use_numpy", [True, False], ids=["numpy-kernel", "torch-kernel"])
def test_both_chunk_kernels_match_numpy(monkeypatch, use_numpy: bool) -> None:
    """CPU tensors go through numpy, accelerator tensors through torch: both must agree."""
    import varloss.stats as stats

    monkeypatch.setattr(stats, "_use_numpy", lambda device: use_numpy)
    monkeypatch.setattr(stats, "_MIN_ROWS", 7)
    monkeypatch.setattr(stats, "_CHUNK_BYTES", 8 * 7 * 5)  # 7-row chunks: many merges
    rng = np.random.default_rng(5)
    x = rng.random((103, 5)) + 3.0
    y = 0.6 * x + 0.2 * rng.random(x.shape)
    acc = PairedMomentAccumulator().update(torch.from_numpy(x).to(torch.bfloat16).float(), y)
    xf = torch.from_numpy(x).to(torch.bfloat16).float().numpy().astype(np.float64)
    terms = acc.terms()
    np.testing.assert_allclose(terms["var_real"].numpy(), np.var(xf, axis=0), rtol=1e-12)
    np.testing.assert_allclose(terms["mse"].numpy(), ((xf - y) ** 2).mean(axis=0), rtol=1e-12)
    cov = ((xf - xf.mean(0)) * (y - y.mean(0))).mean(axis=0)
    np.testing.assert_allclose(acc.covariance().numpy(), cov, rtol=1e-12)
    single = MomentAccumulator().update(torch.from_numpy(x).to(torch.bfloat16))
    np.testing.assert_allclose(single.variance().numpy(), np.var(xf, axis=0), rtol=1e-12)


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_row_blocks_equal_one_thread_and_numpy(monkeypatch, threads: int) -> None:
    """Large CPU batches are reduced in row blocks on `torch.get_num_threads()` threads and
    merged in order: the same numbers as one thread (to rounding) and as numpy."""
    import varloss.stats as stats

    rng = np.random.default_rng(7)
    x = (5.0 + rng.random((1001, 37))).astype(np.float32)
    y = (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = PairedMomentAccumulator().update(x, y)
        single_x = MomentAccumulator().update(x)
        monkeypatch.setattr(stats, "_PARALLEL_MIN_VALUES", 0)
        torch.set_num_threads(threads)
        calls = []
        original = stats._in_row_blocks

        def counted(rows, reduce_block):
            parts = original(rows, reduce_block)
            calls.append(None if parts is None else len(parts))
            return parts

        monkeypatch.setattr(stats, "_in_row_blocks", counted)
        parallel = PairedMomentAccumulator().update(x, y)
        parallel_x = MomentAccumulator().update(x)
    finally:
        torch.set_num_threads(previous)
    assert calls == [threads, threads]  # the parallel path really ran, with one block per thread
    for a, b in ((single.real, parallel.real), (single_x, parallel_x)):
        assert a.count == b.count == 1001
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-13, atol=0)
        torch.testing.assert_close(a.m2, b.m2, rtol=1e-11, atol=0)
    torch.testing.assert_close(single.comoment, parallel.comoment, rtol=1e-11, atol=0)
    reference = np.var(x.astype(np.float64), axis=0)
    np.testing.assert_allclose(parallel_x.variance().numpy(), reference, rtol=1e-12)
    terms = parallel.terms()
    mse = ((x.astype(np.float64) - y) ** 2).mean(axis=0)
    np.testing.assert_allclose(terms["mse"].numpy(), mse, rtol=1e-10)


@pytest.mark.parametrize("outer", [False, True])
def test_chan_merge_of_two_halves_equals_numpy_on_the_whole(outer: bool) -> None:
    """The one Chan merge (used by MomentAccumulator and quality's FeatureStatistics)."""
    x = np.random.default_rng(7).normal(3.0, 2.0, size=(91, 6))
    a, b = torch.from_numpy(x[:40]), torch.from_numpy(x[40:])

    def m2(part: torch.Tensor) -> torch.Tensor:
        centred = part - part.mean(0)
        return centred.T @ centred if outer else (centred * centred).sum(0)

    count, mean, merged_m2 = chan_merge(40, a.mean(0), m2(a), 51, b.mean(0), m2(b), outer=outer)
    assert count == 91
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-12)
    expected = np.cov(x.T, ddof=0) * 91 if outer else np.var(x, axis=0) * 91
    np.testing.assert_allclose(merged_m2.numpy(), expected, rtol=1e-10)
