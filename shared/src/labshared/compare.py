"""Paired comparison of two or more runs on the items they both scored (`rtd compare`,
`tldr compare`, `robattr compare`).

Each tool turns a run folder into one or more `Entry`s (its per-item table, read with
`labshared.items`, as item keys, strata and per-item metric columns) and names its
headline numbers (`Headline`: which column, aggregated how). This module then

1. checks every entry scored the same items as the first (by key); if not, it names the
   difference (how many items only in the first, only in the other) and refuses, or with
   `intersect=True` restricts every entry to the common items and says so;
2. for each headline, gives each entry's number with its 95 % bootstrap interval, and each
   later entry's paired difference to the first (the same resampled items for both) with
   its interval and a p-value (`labshared.stats.paired`: exact McNemar for a 0/1 metric
   without strata, else the paired bootstrap).

The result is a table (rows: metric x entry) and a JSON-able dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labshared.console import render_table
from labshared.errors import ConfigError
from labshared.stats import BootstrapSpec, interval, paired


@dataclass(frozen=True)
class Headline:
    """One headline number of a tool, from a per-item column.

    Attributes:
        name: as printed (e.g. "R@1", "worst-group").
        column: the per-item column holding each item's contribution.
        how: the `labshared.stats.aggregate` that makes the number from the column.
        scale: the values' unit (100 for percent), for the McNemar check and printing.
        digits: decimals printed.
        weights: for a `weighted` headline, which of the entry's `weights` it uses.
    """

    name: str
    column: str
    how: str = "mean"
    scale: float = 1.0
    digits: int = 2
    weights: str = ""


@dataclass
class Entry:
    """One side of a comparison: a run (or one method of a run) and its items.

    Attributes:
        label: how the table names it.
        keys: (N,) hashable item keys (unique).
        values: column -> (N,) per-item values.
        groups: (N,) strata or None.
        weights: name -> {stratum label -> weight}, for `weighted` headlines (e.g.
            "train": the training-set size of each group).
    """

    label: str
    keys: list
    values: dict[str, np.ndarray]
    groups: np.ndarray | None = None
    weights: dict[str, dict[Any, float]] = field(default_factory=dict)

    def take(self, rows: np.ndarray) -> Entry:
        """The entry restricted to (and reordered by) item positions `rows`."""
        groups = None if self.groups is None else self.groups[rows]
        values = {k: v[rows] for k, v in self.values.items()}
        return Entry(self.label, [self.keys[i] for i in rows], values, groups, self.weights)


def align(entries: Sequence[Entry], intersect: bool = False) -> tuple[list[Entry], str]:
    """Every entry reordered to the first one's items; returns (entries, note).

    Raises:
        ConfigError: fewer than two entries, duplicate keys, or different item sets
            without `intersect` (the message counts the items only on each side).
    """
    if len(entries) < 2:
        raise ConfigError(f"compare needs at least two runs (got {len(entries)})")
    for e in entries:
        if len(set(e.keys)) != len(e.keys):
            raise ConfigError(f"{e.label}: its per-item table repeats item keys")
    first = entries[0]
    common = set(first.keys)
    for e in entries[1:]:
        common &= set(e.keys)
    note = ""
    if any(set(e.keys) != set(first.keys) for e in entries[1:]):
        diffs = [
            f"{e.label}: {len(set(first.keys) - set(e.keys))} items only in {first.label}, "
            f"{len(set(e.keys) - set(first.keys))} only in {e.label}"
            for e in entries[1:]
            if set(e.keys) != set(first.keys)
        ]
        if not intersect or not common:
            raise ConfigError(
                "the runs scored different items (" + "; ".join(diffs) + "); "
                + ("none in common" if not common else
                   f"pass --intersect to compare on the {len(common)} items all of them scored")
            )  # fmt: skip
        note = f"restricted to the {len(common)} items every run scored (" + "; ".join(diffs) + ")"
    order = [k for k in first.keys if k in common]
    out = []
    for e in entries:
        pos = {k: i for i, k in enumerate(e.keys)}
        out.append(e.take(np.array([pos[k] for k in order], dtype=np.int64)))
    if first.groups is not None and any(
        e.groups is not None and not np.array_equal(e.groups, out[0].groups) for e in out[1:]
    ):
        raise ConfigError(f"the runs put the same items in different groups ({first.label})")
    return out, note


def _weights(entry: Entry, groups: np.ndarray | None, name: str) -> np.ndarray | None:
    if groups is None or name not in entry.weights:
        raise ConfigError(f"{entry.label}: no {name!r} group weights for a weighted figure")
    w = entry.weights[name]
    return np.array([w.get(g, 0.0) for g in np.unique(groups).tolist()], dtype=np.float64)


def compare(
    entries: Sequence[Entry],
    headlines: Sequence[Headline],
    spec: BootstrapSpec = BootstrapSpec(),
    intersect: bool = False,
) -> dict[str, Any]:
    """Numbers with intervals and paired differences to the first entry.

    Returns:
        {"n_items", "note", "bootstrap", "entries": [labels], "metrics": {headline:
        {"values": {label: {"value", "interval"}}, "differences": {label: PairedResult
        dict}}}}; a headline whose column some entry lacks is left out.
    """
    entries, note = align(entries, intersect)
    base = entries[0]
    out: dict[str, Any] = {
        "n_items": len(base.keys), "note": note, "bootstrap": spec.record("item"),
        "entries": [e.label for e in entries], "metrics": {},
    }  # fmt: skip
    for h in headlines:
        if not all(h.column in e.values for e in entries):
            continue
        groups = base.groups if h.how != "mean" else None
        weights = _weights(base, groups, h.weights) if h.how == "weighted" else None
        values, diffs = {}, {}
        for e in entries:
            ci = interval(e.values[h.column], groups, h.how, weights, spec)
            values[e.label] = {"value": ci.estimate, "interval": ci.as_list()}
        for e in entries[1:]:
            res = paired(base.values[h.column], e.values[h.column], groups, h.how, weights,
                         h.scale, spec)  # fmt: skip
            diffs[e.label] = res.as_dict()
        out["metrics"][h.name] = {"values": values, "differences": diffs}
    return out


def _fmt(value: float, low: float, high: float, digits: int, sign: bool = False) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def print_comparison(
    result: dict[str, Any], headlines: Sequence[Headline], *, markdown: bool = False,
    as_json: bool = False,
) -> None:  # fmt: skip
    """A `compare` command's result on stdout: the JSON of `result` (`--json`) or its
    table (`--markdown`: Markdown, else the terminal's)."""
    import json
    import sys

    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(format_comparison(result, headlines, markdown=markdown) + "\n")


def format_comparison(
    result: dict[str, Any], headlines: Sequence[Headline], markdown: bool = False,
    title: str | None = None,
) -> str:  # fmt: skip
    """One row per (metric, entry): the number [95 % interval], and for every entry but
    the first its difference to the first [95 % interval] and the p-value."""
    digits = {h.name: h.digits for h in headlines}
    first = result["entries"][0]
    rows = []
    for name, m in result["metrics"].items():
        d = digits.get(name, 2)
        for label, v in m["values"].items():
            cells = [name, label, _fmt(v["value"], *v["interval"], d)]
            if label == first:
                cells += ["", "", ""]
            else:
                diff = m["differences"][label]
                cells += [_fmt(diff["diff"], *diff["interval"], d, sign=True),
                          _p(diff["p_value"]), diff["test"]]  # fmt: skip
            rows.append(cells)
    table = render_table(
        ["metric", "run", "value [95 % CI]", f"- {first} [95 % CI]", "p", "test"],
        rows, markdown=markdown, align="llr", title=title,
    )  # fmt: skip
    b = result["bootstrap"]
    foot = (
        f"{result['n_items']} paired items; percentile bootstrap, {b['n_resamples']} "
        f"resamples, seed {b['seed']}"
    )
    if result["note"]:
        foot += f"; {result['note']}"
    return f"{table}\n{foot}"
