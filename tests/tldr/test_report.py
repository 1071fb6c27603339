"""The printed tables round every figure the way `tldr compare` does (issue 15 item 4):
one decimal of a percentage, intervals in brackets, never a float32's raw digits."""

import numpy as np

from tldr_cli.report import pct, summary_table

GROUPS = [{"y": 0, "a": 0, "n": 10, "train_n": 90}, {"y": 1, "a": 1, "n": 12, "train_n": 7}]


def _method(worst: float, group_accs: list[float]) -> dict:
    acc = np.float32(worst)  # what torch / numpy hand over: 0.921 is 0.92099998...
    return {
        "worst_group_acc": acc, "average_acc": np.float32(0.95), "class_balanced_acc": 0.9,
        "accuracy": 0.93, "n": 22,
        "intervals": {"worst_group_acc": [np.float32(0.8765), np.float32(0.9999)]},
        "groups": [{**g, "acc": np.float32(a)} for g, a in zip(GROUPS, group_accs, strict=True)],
    }  # fmt: skip


def test_pct_rounds_a_float32_to_one_decimal():
    assert pct(np.float32(0.921)) == "92.1" and pct(1.0) == "100.0" and pct(0) == "0.0"


def test_summary_table_prints_rounded_percentages_with_intervals():
    results = {"ERM": _method(0.921, [0.9805, 0.4449]), "TLDR": _method(0.5, [1.0, 0.0])}
    text = summary_table(results, ["small", "large"], ["grass", "brick"])
    assert "92.1 [87.7, 100.0]" in text and "50.0 [87.7, 100.0]" in text
    assert "95.0" in text and "90.0" in text and "93.0" in text  # no interval: the figure
    assert "98.0" in text and "44.5" in text and "small, grass" in text
    assert "worst-group (%)" in text and "ERM (%)" in text
    assert "0.92099" not in text and "92.09" not in text
