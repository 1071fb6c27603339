"""Before/after table of `rtd eval` runs (the rtd demo's last step).

    python -m rtd_cli.compare runs/demo-rtd/eval-base runs/demo-rtd/eval-rtd \
        --names "LinCIR (toy phi)" "+ RTD"

Reads each run folder's metrics.json (written by `rtd eval`) and prints one Markdown row
per run with the benchmark summary metrics, plus a row of differences (last - first).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from labshared.errors import ConfigError


def read_summary(run_dir: str | Path) -> dict[str, float]:
    """The `summary` of an `rtd eval` run folder (or its metrics.json)."""
    path = Path(run_dir)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{path}: no metrics.json; is it an `rtd eval` run folder?")
    data = json.loads(path.read_text())
    if "summary" not in data:
        raise ConfigError(f"{path}: no 'summary' field; not written by `rtd eval`")
    return dict(data["summary"])


def compare_table(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> str:
    """Markdown table: one row per run, columns the union of summary metrics."""
    if not runs:
        raise ConfigError("compare needs at least one run folder")
    names = list(names) if names else [Path(r).name for r in runs]
    if len(names) != len(runs):
        raise ConfigError(f"{len(names)} names for {len(runs)} runs")
    rows = [read_summary(r) for r in runs]
    cols = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in zip(names, rows, strict=True):
        cells = [f"{row[c]:.2f}" if c in row else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(rows) > 1:
        diff = [
            f"{rows[-1][c] - rows[0][c]:+.2f}" if c in rows[0] and c in rows[-1] else "-"
            for c in cols
        ]
        lines.append("| difference | " + " | ".join(diff) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rtd_cli.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="rtd eval run folders (or metrics.json files)")
    parser.add_argument("--names", nargs="+", help="row labels, one per run")
    args = parser.parse_args(argv)
    try:
        print(compare_table(args.runs, args.names))
    except ConfigError as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
