"""ERM vs TLDR vs DFR side by side: two tables (stdout, `labshared.console.render_table`)
and a bar chart and loss chart (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labshared.console import render_table

COLUMNS = (("worst_group_acc", "worst-group (%)"), ("average_acc", "average (train-weighted, %)"),
           ("class_balanced_acc", "class-bal. (%)"), ("accuracy", "plain acc. (%)"))  # fmt: skip


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal, as `tldr compare` prints it
    (`outputs.headlines`, digits 1): 0.92099998 -> '92.1'."""
    return f"{100 * float(x):.1f}"


def _cell(m: dict[str, Any], key: str) -> str:
    """'79.5 [75.0, 84.0]': the figure with its 95 % interval when it has one (the look of
    `labshared.compare.format_comparison`)."""
    ci = m.get("intervals", {}).get(key)
    return f"{pct(m[key])} [{pct(ci[0])}, {pct(ci[1])}]" if ci else pct(m[key])


def summary_table(results: dict[str, dict[str, Any]], class_names, spurious_names) -> str:
    """Methods as rows, metrics (in %, with their 95 % bootstrap intervals over test
    images) as columns; then one row per group (test and training counts, each method's
    accuracy)."""
    n = next(iter(results.values())).get("n")
    title = (f"test accuracy [95 % interval, bootstrap over the {n} test images, each group "
             "resampled within itself]") if n else None  # fmt: skip
    methods = render_table(
        ["method", *(t for _, t in COLUMNS)],
        [[method, *(_cell(m, key) for key, _ in COLUMNS)] for method, m in results.items()],
        title=title,
    )
    rows = []
    for i, g in enumerate(next(iter(results.values()))["groups"]):
        rows.append(
            [
                f"{class_names[g['y']]}, {spurious_names[g['a']]}",
                g["n"],
                g["train_n"],
                *(pct(results[m]["groups"][i]["acc"]) for m in results),
            ]
        )
    heads = ["group (class, spurious)", "n test", "n train", *(f"{m} (%)" for m in results)]
    groups = render_table(heads, rows)
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
    """Grouped bars of worst-group and average (train-weighted) accuracy per method, each
    with its 95 % interval as an error bar; the legend sits above the plot area, clear of
    every bar."""
    plt = _pyplot()
    methods = list(results)
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(methods), 3.6))
    width = 0.38
    for j, (key, label) in enumerate(
        (("worst_group_acc", "worst-group"), ("average_acc", "average (train-weighted)"))
    ):
        xs = [i + (j - 0.5) * width for i in range(len(methods))]
        vals = [100 * results[m][key] for m in methods]
        cis = [results[m].get("intervals", {}).get(key) for m in methods]
        err = None
        if all(cis):
            err = [[v - 100 * c[0] for v, c in zip(vals, cis, strict=True)],
                   [100 * c[1] - v for v, c in zip(vals, cis, strict=True)]]  # fmt: skip
        ax.bar(xs, vals, width, label=label, yerr=err, capsize=3, error_kw={"elinewidth": 0.8})
        for x, v, top in zip(xs, vals, err[1] if err else [0] * len(vals), strict=True):
            ax.text(x, v + top + 1.5, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9, pad=22)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
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
