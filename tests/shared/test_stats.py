"""labshared.stats: the percentile bootstrap against scipy and hand-checkable cases;
labshared.items: Parquet round trips; labshared.compare: alignment and paired tables."""

import numpy as np
import pytest
from scipy import stats as sps

from labshared.compare import Entry, Headline, align, compare, format_comparison
from labshared.errors import ConfigError
from labshared.items import items_meta, read_items, write_items
from labshared.stats import (
    BootstrapSpec,
    aggregate,
    interval,
    intervals,
    mcnemar_exact,
    paired,
    resampled_group_means,
)


def test_mean_interval_matches_scipy_percentile_bootstrap():
    x = np.random.default_rng(3).normal(2.0, 1.5, size=200)
    ours = interval(x, spec=BootstrapSpec(n_resamples=40_000, seed=1))
    ref = sps.bootstrap((x,), np.mean, n_resamples=40_000, method="percentile",
                        random_state=np.random.default_rng(2)).confidence_interval  # fmt: skip
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert ours.estimate == pytest.approx(x.mean())
    # two independent Monte-Carlo draws of the same interval: within a few hundredths of a SE
    assert abs(ours.low - ref.low) < 0.05 * se and abs(ours.high - ref.high) < 0.05 * se


def test_paired_difference_matches_scipy_on_the_differences():
    rng = np.random.default_rng(4)
    a = rng.normal(size=150)
    b = a + 0.3 + rng.normal(scale=0.5, size=150)
    res = paired(a, b, spec=BootstrapSpec(n_resamples=40_000, seed=5))
    ref = sps.bootstrap((b - a,), np.mean, n_resamples=40_000, method="percentile",
                        random_state=np.random.default_rng(6)).confidence_interval  # fmt: skip
    se = (b - a).std(ddof=1) / np.sqrt(150)
    assert res.diff.estimate == pytest.approx((b - a).mean())
    assert abs(res.diff.low - ref.low) < 0.05 * se and abs(res.diff.high - ref.high) < 0.05 * se
    assert res.test == "paired bootstrap" and res.p_value < 0.001


def test_hand_checkable_cases():
    # constant values: every resample gives the same mean, the interval collapses
    ci = interval([0.7] * 9)
    assert (ci.estimate, ci.low, ci.high) == (0.7, 0.7, 0.7)
    # one item per stratum: the stratified resample can only redraw each item itself
    ci = interval([1.0, 0.0, 1.0], groups=[0, 1, 2], how="worst_group")
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0)
    # two items {0, 1}: resample means are 0, 0.5 (twice as likely) or 1
    _, res, _ = resampled_group_means([0.0, 1.0], spec=BootstrapSpec(n_resamples=20_000, seed=0))
    share = np.bincount((res[:, 0, 0] * 2).astype(int), minlength=3) / 20_000
    assert share == pytest.approx([0.25, 0.5, 0.25], abs=0.02)
    # aggregates of per-stratum means, by hand
    gm, counts = np.array([[0.5], [1.0]]), np.array([2, 6])
    assert aggregate(gm, counts, "mean")[0] == pytest.approx((2 * 0.5 + 6 * 1.0) / 8)
    assert aggregate(gm, counts, "group_mean")[0] == 0.75
    assert aggregate(gm, counts, "worst_group")[0] == 0.5
    assert aggregate(gm, counts, "weighted", weights=[3, 1])[0] == pytest.approx(0.625)


def test_worst_group_resamples_within_groups_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], [500, 40, 300])
    correct = (rng.random(840) < np.where(groups == 1, 0.6, 0.9)).astype(float)
    spec = BootstrapSpec(n_resamples=5_000, seed=7)
    ci = interval(correct, groups, "worst_group", spec=spec)
    assert ci.estimate == correct[groups == 1].mean()
    assert ci.low < ci.estimate < ci.high and ci.high - ci.low > 0.15  # 40 items: wide
    assert interval(correct, groups, "worst_group", spec=spec) == ci  # seeded: identical
    many = intervals(np.stack([correct, 1 - correct], 1), groups, "group_mean", spec=spec)
    assert len(many) == 2 and many[0].estimate == pytest.approx(1 - many[1].estimate)
    with pytest.raises(ValueError, match="needs groups"):
        interval(correct, how="worst_group")


def test_mcnemar_exact_and_its_choice_for_binary_recalls():
    a = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    b = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=float)
    # 5 discordant, all in favour of b: two-sided exact p = 2 * 0.5**5
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5**5)
    assert mcnemar_exact(a, a) == 1.0
    res = paired(100 * a, 100 * b, scale=100.0)
    assert res.test == "exact McNemar" and res.p_value == pytest.approx(0.0625)
    assert res.diff.estimate == pytest.approx(50.0)


def test_items_round_trip_and_errors(tmp_path):
    path = write_items(tmp_path, "queries", {
        "query_id": ["q1", "q2", "q3"], "rank": np.array([1, 0, 7]),
        "top_ids": np.array([[3, 4], [5, 6], [7, 8]]), "R@1": [100.0, 0.0, 0.0],
    }, keys=["query_id"], metrics=["R@1"], meta={"unit": "query"})  # fmt: skip
    assert path == tmp_path / "items" / "queries.parquet"
    table = read_items(tmp_path, "queries")
    assert table.column("query_id").to_pylist() == ["q1", "q2", "q3"]
    assert table.column("top_ids").to_pylist() == [[3, 4], [5, 6], [7, 8]]
    assert items_meta(table) == {"keys": ["query_id"], "metrics": ["R@1"], "unit": "query"}
    with pytest.raises(ValueError, match="not unique"):
        write_items(tmp_path, "x", {"k": [1, 1]}, keys=["k"])
    with pytest.raises(ValueError, match="differ in length"):
        write_items(tmp_path, "x", {"k": [1, 2], "v": [1.0]}, keys=["k"])
    with pytest.raises(ConfigError, match="no per-item table"):
        read_items(tmp_path, "missing")


def _entry(label, keys, r1, groups=None):
    return Entry(label, list(keys), {"R@1": np.asarray(r1, dtype=float)}, groups)


def test_compare_aligns_by_key_and_names_differences():
    a = _entry("A", ["x", "y", "z"], [100, 0, 0])
    b = _entry("B", ["z", "y", "x"], [100, 100, 100])  # same items, other order
    (ea, eb), note = align([a, b])
    assert note == "" and eb.keys == ["x", "y", "z"] and list(eb.values["R@1"]) == [100] * 3
    c = _entry("C", ["x", "y", "w", "v"], [0, 0, 0, 0])
    with pytest.raises(ConfigError, match="1 items only in A, 2 only in C.*--intersect"):
        align([a, c])
    _, note = align([a, c], intersect=True)
    assert note.startswith("restricted to the 2 items every run scored")
    with pytest.raises(ConfigError, match="at least two runs"):
        align([a])


def test_compare_table_has_values_differences_and_p():
    rng = np.random.default_rng(1)
    hits_a = (rng.random(300) < 0.4) * 100.0
    hits_b = np.where(rng.random(300) < 0.5, 100.0, hits_a)
    heads = [Headline("R@1", "R@1", scale=100.0)]
    spec = BootstrapSpec(n_resamples=2_000, seed=0)
    res = compare([_entry("base", range(300), hits_a), _entry("rtd", range(300), hits_b)],
                  heads, spec)  # fmt: skip
    m = res["metrics"]["R@1"]
    assert m["values"]["base"]["value"] == pytest.approx(hits_a.mean())
    assert m["differences"]["rtd"]["diff"] == pytest.approx(hits_b.mean() - hits_a.mean())
    assert m["differences"]["rtd"]["test"] == "exact McNemar"
    lo, hi = m["differences"]["rtd"]["interval"]
    assert lo < m["differences"]["rtd"]["diff"] < hi
    text = format_comparison(res, heads, markdown=True)
    assert "| R@1 | rtd |" in text and "300 paired items" in text and "seed 0" in text
