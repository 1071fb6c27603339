"""The demo's before/after tables and chart from `rtd eval` run folders."""

import json

import pytest

from labshared.errors import ConfigError
from rtd_cli.compare import attribute_table, compare_table, main, write_chart


def _run(tmp_path, name, summary, by_attribute=None, counts=None, n=None):
    d = tmp_path / name
    d.mkdir()
    data = {"summary": summary, "parts": {}}
    if by_attribute is not None:
        data.update(by_attribute=by_attribute, attribute_queries=counts, n_queries={"toy": n})
    (d / "metrics.json").write_text(json.dumps(data))
    return d


def test_table_and_difference_row(tmp_path, capsys):
    a = _run(tmp_path, "base", {"R@1": 10.0, "R@5": 30.5})
    b = _run(tmp_path, "rtd", {"R@1": 12.25, "R@5": 29.5})
    table = compare_table([a, b], ["base", "+RTD"])
    assert table.splitlines() == [
        "| model | R@1 | R@5 |",
        "| :--- | ---: | ---: |",
        "| base | 10.00 | 30.50 |",
        "| +RTD | 12.25 | 29.50 |",
        "| difference | +2.25 | -1.00 |",
    ]
    assert attribute_table([a, b]) == ""  # no per-attribute metrics: no second table
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| rtd | 12.25" in out and "changed attribute" not in out
    with pytest.raises(ConfigError, match="no metrics.json"):
        compare_table([tmp_path / "missing"])
    with pytest.raises(ConfigError, match="1 names for 2 runs"):
        compare_table([a, b], ["x"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not JSON"):
        compare_table([tmp_path / "bad.json"])


@pytest.fixture
def toy_runs(tmp_path):
    counts = {"digit": 3, "colour": 4, "background": 3}
    base = _run(tmp_path, "base", {"R@1": 40.0, "R@5": 80.0},
                {"digit": {"R@1": 0.0, "R@5": 33.33}, "colour": {"R@1": 75.0, "R@5": 100.0},
                 "background": {"R@1": 33.33, "R@5": 100.0}}, counts, 10)  # fmt: skip
    rtd = _run(tmp_path, "rtd", {"R@1": 70.0, "R@5": 100.0},
               {"digit": {"R@1": 66.67, "R@5": 100.0}, "colour": {"R@1": 75.0, "R@5": 100.0},
                "background": {"R@1": 66.67, "R@5": 100.0}}, counts, 10)  # fmt: skip
    return base, rtd


def test_attribute_table_has_all_queries_then_each_attribute(toy_runs, capsys):
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
    assert main([*map(str, toy_runs), "--names", "base", "+RTD", "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "by changed attribute" in out and "| digit (3) | +RTD | 66.67" in out
    assert f"chart: {chart}" in out


def test_chart_is_a_png_of_the_groups(toy_runs, tmp_path):
    from PIL import Image

    path = write_chart(toy_runs, tmp_path / "r1.png", ["base", "+RTD"], "R@5", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    with pytest.raises(ConfigError, match="metric 'mAP@5' not in its summary"):
        write_chart(toy_runs, tmp_path / "x.png", metric="mAP@5")
