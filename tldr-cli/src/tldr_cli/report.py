"""ERM vs TLDR vs DFR side by side: a plain-text table (stdout) and a bar chart (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = (("worst_group_acc", "worst-group"), ("average_acc", "average"),
           ("class_balanced_acc", "class-bal."), ("accuracy", "plain acc."))  # fmt: skip


def summary_table(results: dict[str, dict[str, Any]], class_names, spurious_names) -> str:
    """Methods as rows, metrics (in %) as columns, then one row per group."""
    lines = [f"{'method':<8}" + "".join(f"{title:>13}" for _, title in COLUMNS)]
    for method, m in results.items():
        lines.append(f"{method:<8}" + "".join(f"{100 * m[key]:>12.1f}%" for key, _ in COLUMNS))
    lines.append("")
    groups = next(iter(results.values()))["groups"]
    header = f"{'group (class, spurious)':<34}{'n test':>8}{'n train':>9}" + "".join(
        f"{m:>9}" for m in results
    )
    lines.append(header)
    for i, g in enumerate(groups):
        name = f"{class_names[g['y']]}, {spurious_names[g['a']]}"
        accs = "".join(f"{100 * results[m]['groups'][i]['acc']:>8.1f}%" for m in results)
        lines.append(f"{name:<34}{g['n']:>8}{g['train_n']:>9}{accs}")
    return "\n".join(lines)


def bar_chart(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Grouped bars of worst-group and average accuracy per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
