"""The paired percentile bootstrap: hand-checkable cases, pairing, and scipy's bootstrap."""

import itertools

import numpy as np
import pytest
from scipy import stats

from robattr_cli.stats import paired_bootstrap


def rng(seed=0):
    return np.random.default_rng(seed)


def test_two_pairs_by_hand():
    """d = (0, 1): the 4 equally likely resamples have means 0, 1/2, 1/2, 1, so 25 % of the
    bootstrap means are 0 and 25 % are 1; the 2.5 % and 97.5 % percentiles are 0 and 1."""
    ci = paired_bootstrap([0.0, 0.0], [0.0, 1.0], n_resamples=4000, generator=rng())
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.5, 0.0, 1.0, 2)


def test_exact_enumeration_of_four_pairs():
    """d = (0, 1, 2, 5): each of the 4^4 = 256 resamples is equally likely. Means 0, 0.25
    and 0.5 take 1, 4 and 10 of them (sum 0; one 1; one 2 or two 1s), so the cumulative
    mass passes 2.5 % at 0.5 (1.95 % up to 0.25, 5.86 % up to 0.5); at the top, means 5,
    4.25, 4 and 3.75 take 1, 4, 4 and 4, so 97.5 % is passed at 4.0 (96.5 % below 4,
    98.0 % up to 4). The Monte-Carlo interval must find these values."""
    diff = np.array([0.0, 1.0, 2.0, 5.0])
    means = np.array([diff[list(i)].mean() for i in itertools.product(range(4), repeat=4)])
    assert np.mean(means <= 0.25) < 0.025 <= np.mean(means <= 0.5)
    assert np.mean(means <= 3.75) < 0.975 <= np.mean(means <= 4.0)
    ci = paired_bootstrap(np.zeros(4), diff, n_resamples=200_000, generator=rng(1))
    assert (ci.low, ci.high, ci.mean) == (0.5, 4.0, 2.0)


def test_constant_differences_give_a_point_interval_however_noisy_the_scores():
    """Pairing: per-image scores vary wildly, but b - a is 0.1 everywhere, so every
    resample's mean difference is 0.1 (an unpaired comparison would be wide)."""
    a = rng(2).normal(0, 5, 300)
    ci = paired_bootstrap(a, a + 0.1, generator=rng())
    assert ci.low == pytest.approx(0.1) and ci.high == pytest.approx(0.1)
    assert ci.excludes_zero_above()


def test_matches_scipy_percentile_bootstrap():
    a = rng(3).normal(0.7, 0.1, 400)
    b = a + rng(4).normal(0.02, 0.08, 400)
    ours = paired_bootstrap(a, b, n_resamples=20_000, generator=rng(5))
    ref = stats.bootstrap(
        (b - a,), np.mean, n_resamples=20_000, method="percentile", confidence_level=0.95,
        rng=rng(6),
    ).confidence_interval  # fmt: skip
    # both are Monte-Carlo estimates; their error here is ~0.0003 (SE of the mean 0.004)
    assert ours.low == pytest.approx(ref.low, abs=0.0015)
    assert ours.high == pytest.approx(ref.high, abs=0.0015)
    assert ours.low < ours.mean < ours.high and ours.mean == pytest.approx(np.mean(b - a))


def test_same_generator_seed_same_interval_and_confidence_widens():
    a, b = rng(7).random(50), rng(8).random(50)
    assert paired_bootstrap(a, b, generator=rng(9)) == paired_bootstrap(a, b, generator=rng(9))
    narrow = paired_bootstrap(a, b, confidence=0.5, generator=rng(9))
    wide = paired_bootstrap(a, b, confidence=0.99, generator=rng(9))
    assert wide.low < narrow.low and narrow.high < wide.high


@pytest.mark.parametrize(
    ("a", "b", "kwargs"),
    [
        ([1.0, 2.0], [1.0], {}),
        ([1.0], [2.0], {}),
        ([1.0, np.nan], [1.0, 2.0], {}),
        ([1.0, 2.0], [1.0, 2.0], {"confidence": 1.0}),
        ([1.0, 2.0], [1.0, 2.0], {"n_resamples": 0}),
    ],
)
def test_bad_input_is_refused(a, b, kwargs):
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, generator=rng(), **kwargs)
