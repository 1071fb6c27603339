"""The demo's before/after table from `rtd eval` run folders."""

import json

import pytest

from labshared.errors import ConfigError
from rtd_cli.compare import compare_table, main


def _run(tmp_path, name, summary):
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"summary": summary, "parts": {}}))
    return d


def test_table_and_difference_row(tmp_path, capsys):
    a = _run(tmp_path, "base", {"R@1": 10.0, "R@5": 30.5})
    b = _run(tmp_path, "rtd", {"R@1": 12.25, "R@5": 29.5})
    table = compare_table([a, b], ["base", "+RTD"])
    assert table.splitlines() == [
        "| model | R@1 | R@5 |",
        "|---|---|---|",
        "| base | 10.00 | 30.50 |",
        "| +RTD | 12.25 | 29.50 |",
        "| difference | +2.25 | -1.00 |",
    ]
    assert main([str(a), str(b)]) == 0 and "| rtd | 12.25" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no metrics.json"):
        compare_table([tmp_path / "missing"])
    with pytest.raises(ConfigError, match="1 names for 2 runs"):
        compare_table([a, b], ["x"])
