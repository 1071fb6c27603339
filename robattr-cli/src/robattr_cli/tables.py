"""The table `robattr attack` and `robattr eval` print: one look, numbers rounded the same
way (4 decimals, each averaged figure beside its 95 % interval); the full values stay in
metrics.json."""

from __future__ import annotations

from typing import Any

from labshared.console import render_table


def format_table(metrics: dict[str, Any]) -> str:
    """The scalar metrics as a table (nested keys joined by '/'; curves, checkpoint paths
    and the bootstrap record left out), each averaged figure with its 95 % interval."""
    rows: list[tuple[str, str, str]] = []
    intervals = metrics.get("intervals", {})

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else key, sub)
        elif isinstance(value, float):
            ci = intervals.get(prefix)
            rows.append((prefix, f"{value:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        elif isinstance(value, int | str) and not prefix.endswith("checkpoint"):
            rows.append((prefix, str(value), ""))

    skip = ("curve", "intervals", "bootstrap")
    walk("", {k: v for k, v in metrics.items() if k not in skip})
    b = metrics.get("bootstrap")
    title = (f"95 % interval: {b['n_resamples']} bootstrap resamples of the images, seed "
             f"{b['seed']}") if b else None  # fmt: skip
    return render_table(("metric", "value", "95 % interval"), rows, align="llr", title=title)
