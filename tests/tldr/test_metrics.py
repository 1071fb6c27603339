"""Group metrics on hand-computed examples."""

import numpy as np
import pytest

from tldr_cli.metrics import evaluate_predictions, group_counts, group_ids


def test_hand_computed_metrics():
    # groups (y, a): (0,0) 4 samples 3 right; (0,1) 2 samples 1 right; (1,0) 2 samples 2 right;
    # (1,1) 2 samples 0 right
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    a = np.array([0, 0, 0, 0, 1, 1, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 0, 1, 1, 1, 0, 0])
    train = np.array([70, 10, 10, 10])
    m = evaluate_predictions(pred, y, a, 2, 2, train)
    assert m["worst_group_acc"] == 0.0
    assert m["average_acc"] == pytest.approx(0.7 * 0.75 + 0.1 * 0.5 + 0.1 * 1.0 + 0.1 * 0.0)
    assert m["class_balanced_acc"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert [(r["y"], r["a"], r["n"], r["acc"], r["train_n"]) for r in m["groups"]] == [
        (0, 0, 4, 0.75, 70),
        (0, 1, 2, 0.5, 10),
        (1, 0, 2, 1.0, 10),
        (1, 1, 2, 0.0, 10),
    ]


def test_absent_groups_are_skipped_and_weights_renormalised():
    y = np.array([0, 0, 1])
    a = np.array([0, 0, 0])  # only groups (0,0) and (1,0) are present
    pred = np.array([0, 1, 1])
    m = evaluate_predictions(pred, y, a, 2, 2, np.array([30, 50, 10, 10]))
    assert m["worst_group_acc"] == 0.5
    assert m["average_acc"] == pytest.approx((30 * 0.5 + 10 * 1.0) / 40)
    assert len(m["groups"]) == 2


def test_group_ids_and_counts():
    np.testing.assert_array_equal(group_ids([0, 1, 3], [1, 0, 2], 4), [1, 4, 14])
    np.testing.assert_array_equal(group_counts([0, 1, 1], [1, 0, 0], 2, 2), [0, 1, 2, 0])
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_predictions([0], [0, 1], [0, 0], 2, 2, [1, 1, 1, 1])


def test_metric_intervals_cover_each_figure_and_collapse_when_exact():
    from labshared.stats import BootstrapSpec, aggregate, resampled_group_means
    from tldr_cli.metrics import group_ids, metric_intervals

    rng = np.random.default_rng(0)
    y = np.repeat([0, 0, 1, 1], [300, 40, 60, 200])
    a = np.repeat([0, 1, 0, 1], [300, 40, 60, 200])
    pred = np.where(rng.random(600) < 0.8, y, 1 - y)
    train = np.array([500, 20, 30, 450])
    spec = BootstrapSpec(n_resamples=3000, seed=1)
    m = evaluate_predictions(pred, y, a, 2, 2, train)
    ci = metric_intervals(pred, y, a, 2, train, spec)
    for key in ("worst_group_acc", "average_acc", "class_balanced_acc", "accuracy"):
        assert ci[key][0] < m[key] < ci[key][1], key
    # the class-balanced weights n_g / n_class(g) reproduce the figure from group means
    observed, _, counts = resampled_group_means((pred == y).astype(float), group_ids(y, a, 2), spec)
    w = counts / np.array([340, 340, 260, 260])
    assert aggregate(observed, counts, "weighted", w)[0] == pytest.approx(m["class_balanced_acc"])
    assert metric_intervals(y, y, a, 2, train, spec) == {
        k: [1.0, 1.0] for k in ("worst_group_acc", "average_acc", "class_balanced_acc", "accuracy")
    }
