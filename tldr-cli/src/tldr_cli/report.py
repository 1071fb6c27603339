"""ERM vs TLDR vs DFR side by side: two tables (stdout, `labshared.console.render_table`)
and a bar chart and loss chart (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labshared.console import render_table

COLUMNS = (("worst_group_acc", "worst-group"), ("average_acc", "average"),
           ("class_balanced_acc", "class-bal."), ("accuracy", "plain acc."))  # fmt: skip


def summary_table(results: dict[str, dict[str, Any]], class_names, spurious_names) -> str:
    """Methods as rows, metrics (in %) as columns; then one row per group (test and
    training counts, each method's accuracy)."""
    methods = render_table(
        ["method", *(title for _, title in COLUMNS)],
        [
            [method, *(f"{100 * m[key]:.1f}%" for key, _ in COLUMNS)]
            for method, m in results.items()
        ],
    )
    rows = []
    for i, g in enumerate(next(iter(results.values()))["groups"]):
        rows.append(
            [
                f"{class_names[g['y']]}, {spurious_names[g['a']]}",
                g["n"],
                g["train_n"],
                *(f"{100 * results[m]['groups'][i]['acc']:.1f}%" for m in results),
            ]
        )
    groups = render_table(["group (class, spurious)", "n test", "n train", *results], rows)
    return f"{methods}\n\n{groups}"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend. Imported here, not at the top:
    matplotlib takes about a second to import and only the chart writers need it, and the
    backend must be chosen before pyplot loads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Grouped bars of worst-group and average accuracy per method."""
    plt = _pyplot()
    methods = list(results)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 3.2))
    width = 0.38
    for j, (key, label) in enumerate(
        (("worst_group_acc", "worst-group"), ("average_acc", "average"))
    ):
        xs = [i + (j - 0.5) * width for i in range(len(methods))]
        vals = [100 * results[m][key] for m in methods]
        bars = ax.bar(xs, vals, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loss_chart(losses: list[float], path: Path) -> Path:
    """The TLDR head's mean training loss per epoch (to see that it has converged)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    ax.plot(range(1, len(losses) + 1), losses, marker="." if len(losses) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (text pairs)")
    ax.set_title("TLDR head: training loss", fontsize=9)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
