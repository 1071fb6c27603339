"""`rtd compare`: paired tables, the per-attribute table and the chart from `rtd eval` run
folders (metrics.json + items/queries.parquet)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from labshared.errors import ConfigError
from labshared.items import write_items
from rtd_cli.cli import app
from rtd_cli.compare import attribute_table, paired_comparison, paired_table, write_chart


def _run(tmp_path, name, summary, by_attribute=None, counts=None, n=None, hits=None):
    d = tmp_path / name
    d.mkdir()
    data = {"summary": summary, "parts": {"toy": summary}}
    if by_attribute is not None:
        data.update(by_attribute=by_attribute, attribute_queries=counts, n_queries={"toy": n})
    (d / "metrics.json").write_text(json.dumps(data))
    if hits is not None:
        q = len(hits)
        write_items(d, "queries", {"part": ["toy"] * q, "query_id": [str(i) for i in range(q)],
                                   "R@1": 100.0 * np.asarray(hits)},
                    keys=["part", "query_id"], metrics=["R@1"])  # fmt: skip
    return d


def test_paired_table_difference_interval_and_mcnemar(tmp_path):
    a_hits = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0] * 10  # 30 %
    b_hits = [1, 1, 1, 1, 0, 1, 0, 0, 1, 0] * 10  # 60 %: 30 queries gained, none lost
    a = _run(tmp_path, "base", {"R@1": 30.0}, hits=a_hits)
    b = _run(tmp_path, "rtd", {"R@1": 60.0}, hits=b_hits)
    result, _ = paired_comparison([a, b], ["base", "+RTD"], n_resamples=4000)
    r1 = result["metrics"]["R@1"]
    assert r1["values"]["base"]["value"] == pytest.approx(30.0)
    diff = r1["differences"]["+RTD"]
    assert diff["diff"] == pytest.approx(30.0) and diff["test"] == "exact McNemar"
    assert diff["p_value"] == pytest.approx(2 * 0.5**30)  # 30 discordant, all one way
    low, high = diff["interval"]
    # the share of gained queries is 0.3 of 100: its bootstrap SE is ~4.6 points
    assert 20 < low < 30 < high < 40
    table = paired_table([a, b], ["base", "+RTD"], n_resamples=4000)
    assert "| R@1 | +RTD | 60.00 [" in table and "| +30.00 [" in table
    assert "100 paired items" in table
    with pytest.raises(ConfigError, match="no metrics.json"):
        paired_table([tmp_path / "missing", a])
    with pytest.raises(ConfigError, match="1 names for 2 runs"):
        paired_table([a, b], ["x"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not JSON"):
        paired_table([tmp_path / "bad.json", a])


def test_compare_names_queries_only_in_one_run(tmp_path):
    a = _run(tmp_path, "base", {"R@1": 30.0}, hits=[1, 0, 0] * 10)
    b = _run(tmp_path, "other", {"R@1": 40.0}, hits=[1, 1, 0, 0, 1] * 8)
    result = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 1
    assert "0 items only in base, 10 only in other" in result.output
    assert "--intersect" in result.output
    ok = CliRunner().invoke(app, ["compare", str(a), str(b), "--intersect"])
    assert ok.exit_code == 0, ok.output
    assert "restricted to the 30 items every run scored" in ok.output


@pytest.fixture
def toy_runs(tmp_path):
    counts = {"digit": 3, "colour": 4, "background": 3}
    base = _run(tmp_path, "base", {"R@1": 40.0, "R@5": 80.0},
                {"digit": {"R@1": 0.0, "R@5": 33.33}, "colour": {"R@1": 75.0, "R@5": 100.0},
                 "background": {"R@1": 33.33, "R@5": 100.0}}, counts, 10,
                hits=[0, 1, 1, 1, 0, 0, 0, 0, 1, 0])  # fmt: skip
    rtd = _run(tmp_path, "rtd", {"R@1": 70.0, "R@5": 100.0},
               {"digit": {"R@1": 66.67, "R@5": 100.0}, "colour": {"R@1": 75.0, "R@5": 100.0},
                "background": {"R@1": 66.67, "R@5": 100.0}}, counts, 10,
               hits=[1, 1, 1, 1, 1, 1, 0, 0, 1, 0])  # fmt: skip
    return base, rtd


def test_attribute_table_has_all_queries_then_each_attribute(toy_runs):
    assert attribute_table(toy_runs, ["base", "+RTD"]).splitlines() == [
        "| queries changing | model | R@1 | R@5 |",
        "| :--- | :--- | ---: | ---: |",
        "| all (10) | base | 40.00 | 80.00 |",
        "| all (10) | +RTD | 70.00 | 100.00 |",
        "| all (10) | difference | +30.00 | +20.00 |",
        "| digit (3) | base | 0.00 | 33.33 |",
        "| digit (3) | +RTD | 66.67 | 100.00 |",
        "| digit (3) | difference | +66.67 | +66.67 |",
        "| colour (4) | base | 75.00 | 100.00 |",
        "| colour (4) | +RTD | 75.00 | 100.00 |",
        "| colour (4) | difference | +0.00 | +0.00 |",
        "| background (3) | base | 33.33 | 100.00 |",
        "| background (3) | +RTD | 66.67 | 100.00 |",
        "| background (3) | difference | +33.34 | +0.00 |",
    ]
    chart = toy_runs[0].parent / "figs" / "chart.png"
    args = ["compare", *map(str, toy_runs), "--name", "base", "--name", "+RTD", "--chart",
            str(chart)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "by changed attribute" in result.output and "digit (3)" in result.output
    assert "| :---" not in result.output  # terminal tables, as the paired one: no Markdown
    assert "chart:" in result.output and chart.is_file()


def test_chart_is_a_png_of_the_groups(toy_runs, tmp_path):
    from PIL import Image

    path = write_chart(toy_runs, tmp_path / "r1.png", ["base", "+RTD"], "R@5", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    with pytest.raises(ConfigError, match="metric 'mAP@5' not in its summary"):
        write_chart(toy_runs, tmp_path / "x.png", metric="mAP@5")
