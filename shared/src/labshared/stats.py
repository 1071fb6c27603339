"""Bootstrap intervals for every headline number, and paired tests between two runs.

One method for the three tools: the percentile bootstrap (Efron & Tibshirani 1993, ch. 13)
over the evaluated items (queries or images). Items are resampled with replacement; with
`groups` (a stratum per item: a benchmark part, or a (class, spurious) group) each stratum
is resampled within itself, keeping its size, so the worst-group accuracy of a resample is
always defined and a part's weight in a mean over parts never changes.

All headline numbers are aggregates of per-stratum means of per-item values:

    mean          sum_g n_g m_g / N: the plain mean over items (recall, accuracy, PCC)
    group_mean    mean_g m_g: the mean over strata (FashionIQ's categories)
    worst_group   min_g m_g (worst-group accuracy)
    weighted      sum_g w_g m_g / sum_g w_g (average accuracy, train-weighted)

so `resampled_group_means` draws R resamples of every stratum at once (index matrices of
(chunk, n_g), chunks bounding memory; no Python loop over resamples or items) and each
aggregate is a vector operation on the (R, G, M) means. The interval is the
(alpha/2, 1 - alpha/2) percentile of the aggregate over resamples; it is what
`scipy.stats.bootstrap(..., method="percentile")` gives, up to Monte-Carlo error
(`tests/shared/test_stats.py`). A paired comparison resamples the same item indices for
both runs and takes the difference per resample; its p-value is the two-sided bootstrap
p-value (twice the smaller share of resampled differences on either side of 0, counted
with +1 in numerator and denominator so it is never 0), or, for a 0/1 metric (a recall, an
accuracy) without strata, the exact McNemar test on the discordant items.

What it measures: the uncertainty from which items were drawn, not from training (a second
training seed moves the numbers too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: how many (resample, item, metric) values one chunk may hold (float64: 32 MB)
CHUNK_ELEMENTS = 4_000_000
AGGREGATES = ("mean", "group_mean", "worst_group", "weighted")


@dataclass(frozen=True)
class BootstrapSpec:
    """How intervals are drawn (recorded in every metrics.json as `bootstrap`).

    Attributes:
        n_resamples: resamples (10,000 keeps the Monte-Carlo error of a 95 % bound near
            0.1 standard error).
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the `numpy.random.default_rng` that draws the resamples.
    """

    n_resamples: int = 10_000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_resamples < 1 or not 0 < self.confidence < 1:
            raise ValueError(
                f"bootstrap: n_resamples {self.n_resamples} must be >= 1 and confidence "
                f"{self.confidence} in (0, 1)"
            )

    def record(self, unit: str) -> dict:
        """The `bootstrap` entry of a metrics.json: settings, method and what was resampled."""
        return {**asdict(self), "method": "percentile", "unit": unit}


@dataclass(frozen=True)
class Interval:
    """A number and its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        """[low, high], the form metrics.json stores beside the number."""
        return [self.low, self.high]

    def format(self, digits: int = 2, scale: float = 1.0, sign: bool = False) -> str:
        """'49.60 [46.50, 52.70]' (times `scale`; `sign`: '+1.20 [+0.40, +2.00]')."""
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        est, low, high = (f.format(scale * v) for v in (self.estimate, self.low, self.high))
        return f"{est} [{low}, {high}]"


def _as_matrix(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    v = v[:, None] if v.ndim == 1 else v
    if v.ndim != 2 or v.shape[0] < 1:
        raise ValueError(f"per-item values must be (N,) or (N, M) with N >= 1, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("per-item values contain NaN or infinity")
    return v


def strata(groups, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Item indices of each stratum (sorted by group value) and the stratum sizes."""
    if groups is None:
        return [np.arange(n)], np.array([n])
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must be ({n},), got {g.shape}")
    _, inverse = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    return members, np.array([len(m) for m in members])


def resampled_group_means(
    values, groups=None, spec: BootstrapSpec = BootstrapSpec()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-stratum means of every metric column, observed and over bootstrap resamples.

    Args:
        values: (N,) or (N, M) per-item values (M metrics of the same items).
        groups: (N,) stratum of each item (any sortable labels), or None (one stratum).
        spec: resamples, confidence and seed.

    Returns:
        (observed (G, M), resampled (R, G, M), counts (G,)); strata ordered by label.
    """
    v = _as_matrix(values)
    members, counts = strata(groups, v.shape[0])
    rng = np.random.default_rng(spec.seed)
    observed = np.stack([v[m].mean(axis=0) for m in members])
    out = np.empty((spec.n_resamples, len(members), v.shape[1]))
    for g, m in enumerate(members):
        cols = [np.ascontiguousarray(v[m, j]) for j in range(v.shape[1])]  # M x (n_g,)
        chunk = max(1, CHUNK_ELEMENTS // len(m))
        for start in range(0, spec.n_resamples, chunk):
            stop = min(start + chunk, spec.n_resamples)
            idx = rng.integers(0, len(m), size=(stop - start, len(m)))  # (chunk, n_g)
            for j, col in enumerate(cols):  # one gather per metric: contiguous, fast
                out[start:stop, g, j] = col[idx].mean(axis=1)
    return observed, out, counts


def aggregate(group_means: np.ndarray, counts, how: str, weights=None) -> np.ndarray:
    """Combine per-stratum means (..., G, M) into the headline number (..., M).

    Args:
        how: one of `AGGREGATES` (see the module docstring).
        weights: (G,) stratum weights for `weighted` (e.g. training-set group sizes).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if how == "mean":
        return np.tensordot(group_means, counts / counts.sum(), axes=([-2], [0]))
    if how == "group_mean":
        return group_means.mean(axis=-2)
    if how == "worst_group":
        return group_means.min(axis=-2)
    if how == "weighted":
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != counts.shape or w.sum() <= 0:
            raise ValueError(f"weights must be {counts.shape} with a positive sum, got {w}")
        return np.tensordot(group_means, w / w.sum(), axes=([-2], [0]))
    raise ValueError(f"unknown aggregate {how!r}; known: {', '.join(AGGREGATES)}")


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - confidence
    low, high = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high


def intervals(
    values, groups=None, how: str = "mean", weights=None, spec: BootstrapSpec = BootstrapSpec()
) -> list[Interval]:
    """Percentile-bootstrap interval of the aggregate `how` of each metric column.

    Args:
        values: (N,) or (N, M) per-item values (one column per metric).
        groups: (N,) strata (resampled within each), required by all aggregates but `mean`.
        how, weights: see `aggregate`.

    Returns:
        One `Interval` per column.
    """
    if how != "mean" and groups is None:
        raise ValueError(f"aggregate {how!r} needs groups")
    observed, resampled, counts = resampled_group_means(values, groups, spec)
    est = aggregate(observed, counts, how, weights)
    low, high = _percentiles(aggregate(resampled, counts, how, weights), spec.confidence)
    rows = zip(est, low, high, strict=True)
    return [Interval(float(e), float(lo), float(hi)) for e, lo, hi in rows]


def interval(values, groups=None, how: str = "mean", weights=None,
             spec: BootstrapSpec = BootstrapSpec()) -> Interval:  # fmt: skip
    """`intervals` of one (N,) column."""
    return intervals(np.asarray(values, dtype=np.float64)[:, None], groups, how, weights, spec)[0]


@dataclass(frozen=True)
class PairedResult:
    """B - A on the same items: the difference, its interval and a two-sided p-value."""

    diff: Interval
    p_value: float
    test: str  # "paired bootstrap" or "exact McNemar"
    n: int

    def as_dict(self) -> dict:
        """JSON form: diff, interval [low, high], p_value, test, n."""
        return {"diff": self.diff.estimate, "interval": self.diff.as_list(),
                "p_value": self.p_value, "test": self.test, "n": self.n}  # fmt: skip


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def mcnemar_exact(a, b) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 outcomes: a binomial test of the
    items B got right and A wrong among the discordant ones (1.0 when none differ)."""
    from scipy.stats import binomtest  # scipy's import costs ~0.3 s; only a test needs it

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def paired(
    a, b, groups=None, how: str = "mean", weights=None, scale: float = 1.0,
    spec: BootstrapSpec = BootstrapSpec(),
) -> PairedResult:  # fmt: skip
    """Aggregate(b) - aggregate(a) on the same items, resampled together.

    Args:
        a, b: (N,) per-item values of the two runs, item i the same in both.
        groups, how, weights: as `intervals`.
        scale: the unit of the values (100 for recalls in percent): the McNemar test is
            used when `how` is "mean" and every value is 0 or `scale`.

    Returns:
        `PairedResult`: the observed difference, its percentile interval, a p-value.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two (N,) arrays, got {a.shape} and {b.shape}")
    if how != "mean" and groups is None:
        raise ValueError(f"aggregate {how!r} needs groups")
    observed, resampled, counts = resampled_group_means(np.stack([a, b], axis=1), groups, spec)
    agg_obs = aggregate(observed, counts, how, weights)
    agg = aggregate(resampled, counts, how, weights)  # (R, 2): same items for both runs
    diffs = agg[:, 1] - agg[:, 0]
    low, high = _percentiles(diffs, spec.confidence)
    diff = Interval(float(agg_obs[1] - agg_obs[0]), float(low), float(high))
    if how == "mean" and groups is None and _is_binary(a / scale) and _is_binary(b / scale):
        return PairedResult(diff, mcnemar_exact(a / scale, b / scale), "exact McNemar", a.size)
    r = diffs.size
    tail = min((np.sum(diffs <= 0) + 1) / (r + 1), (np.sum(diffs >= 0) + 1) / (r + 1))
    return PairedResult(diff, float(min(1.0, 2 * tail)), "paired bootstrap", a.size)


def intervals_dict(names: Sequence[str], found: Sequence[Interval]) -> dict[str, list[float]]:
    """{metric: [low, high]} for a metrics.json `intervals` entry."""
    return {n: i.as_list() for n, i in zip(names, found, strict=True)}
