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
