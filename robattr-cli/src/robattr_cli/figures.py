"""Heat-map figures (PNG, matplotlib Agg): images, clean maps, attacked images and maps.

One row per example, columns: input image | clean map | attacked image | attacked map
(the last two only when the run attacked something). Maps are shown on their own [0, max]
scale, as the official `hm_plot` normalises by the max.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from labshared.runs import atomic_write

MAX_ROWS = 6


def to_pixels(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised (N, C, H, W) -> displayable (N, H, W, C) pixels in [0, 1]."""
    m = torch.tensor(list(mean), dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=x.dtype).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1).permute(0, 2, 3, 1)


def save_attack_figure(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    *,
    title: str = "",
    max_rows: int = MAX_ROWS,
) -> Path:
    """Write the figure for `tensors` (keys x, h_clean, optional x_adv, h_adv, y).

    Args:
        tensors: normalised inputs (N, C, H, W) and (N, H, W) maps, on the CPU.
        meta: checkpoint meta with `mean` and `std` (to show pixels).
    """
    # Imported here: matplotlib is a heavy import only the figure needs, and the Agg
    # backend must be chosen before pyplot loads (no display on servers and in CI).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_rows, tensors["x"].shape[0])
    attacked = "x_adv" in tensors and "h_adv" in tensors
    columns = [("x", "image"), ("h_clean", "clean map")]
    if attacked:
        columns += [("x_adv", "attacked image"), ("h_adv", "attacked map")]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.0 * len(columns), 2.0 * n), squeeze=False)
    for col, (key, label) in enumerate(columns):
        data = tensors[key][:n].float()
        if key.startswith("x"):
            data = to_pixels(data, meta["mean"], meta["std"])
        for row in range(n):
            ax = axes[row][col]
            img = data[row].numpy()
            if key.startswith("x"):
                ax.imshow(
                    img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1
                )
            else:
                ax.imshow(img, cmap="hot", vmin=0, vmax=max(float(img.max()), 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=9)
            if col == 0 and "y" in tensors:
                ax.set_ylabel(f"label {int(tensors['y'][row])}", fontsize=8)
    return _save(fig, path, title)


def save_pair_figure(
    path: str | Path,
    images: torch.Tensor,
    maps: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    diffs: Sequence[tuple[str, Any, Any]],
    meta: Mapping[str, Any],
    *,
    title: str = "",
) -> Path:
    """Two models on the same digits: each digit's clean and top-k-attacked maps under
    both (left), and the per-digit distribution of each paired difference (right).

    Args:
        images: (n, C, H, W) normalised clean digits (the rows).
        maps: model -> (clean maps (n, H, W), attacked maps (n, H, W), top-k intersection
            of the attacked with the clean map (n,)), for two models.
        diffs: (label, per-digit differences B - A (N,), `labshared.stats.Interval`) per
            histogram.
        meta: checkpoint meta with `mean` and `std`.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only (see save_attack_figure)
    import matplotlib.pyplot as plt

    n, models = images.shape[0], list(maps)
    fig = plt.figure(figsize=(2.0 * (1 + 2 * len(models)) + 4.2, 1.9 * max(n, 2) + 0.6))
    widths = [1] * (1 + 2 * len(models)) + [2.6]  # digit, maps, then the histograms
    grid = fig.add_gridspec(n, len(widths), width_ratios=widths)
    pixels = to_pixels(images.float(), meta["mean"], meta["std"])
    for row in range(n):
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(pixels[row].squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        _bare(ax, "digit" if row == 0 else "")
        for m, model in enumerate(models):
            clean, adv, kept = maps[model]
            for c, (data, label) in enumerate(((clean, "clean map"), (adv, "after top-k attack"))):
                ax = fig.add_subplot(grid[row, 1 + 2 * m + c])
                img = data[row].float().numpy()
                ax.imshow(img, cmap="hot", vmin=0, vmax=max(float(img.max()), 1e-12))
                _bare(ax, f"{model}: {label}" if row == 0 else "")
                if c == 1:
                    ax.set_xlabel(f"top-k kept {float(kept[row]):.2f}", fontsize=7)
    half = max(n // len(diffs), 1)
    for d, (label, values, ci) in enumerate(diffs):
        stop = n if d == len(diffs) - 1 else (d + 1) * half
        ax = fig.add_subplot(grid[d * half : stop, -1])
        ax.hist(values, bins=30, color="tab:blue", alpha=0.75)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.axvspan(ci.low, ci.high, color="tab:orange", alpha=0.35,
                   label=f"mean {ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]")  # fmt: skip
        ax.set_title(f"{label}\nper digit, {models[1]} - {models[0]} (n = {len(values)})",
                     fontsize=8)  # fmt: skip
        ax.set_xlabel("paired difference (0: no change)", fontsize=7)
        ax.set_ylabel("digits", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    return _save(fig, path, title)


def _bare(ax, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _save(fig, path, title: str | None):
    """Title, tight layout, an atomic PNG write and the figure closed; returns the path."""
    import matplotlib.pyplot as plt  # the callers' lazy import (the Agg backend set there)

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return out
