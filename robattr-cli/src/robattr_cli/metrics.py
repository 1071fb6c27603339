"""Similarity of attribution maps, per image (official `utils/metrics.py` and peers).

All functions take two batches of maps `a`, `b` shaped (B, H, W) (or (B, ...), flattened
per image) and return a (B,) tensor; average over images yourself. They are pure tensor
functions, vectorised over the batch (no Python loops over pixels).

- `pcc`: Pearson correlation. Deviation: the official `calc_pcc` divides a population
  covariance by unbiased stds, i.e. r * (n-1)/n; this is the exact r (scipy's pearsonr).
- `ssim`: SSIM with a 7x7 Gaussian window (sigma 1.5), C1 = (0.01 L)^2, C2 = (0.03 L)^2,
  L = value range of the first map, zero padding (`same`, as the official `_ssim`) or
  `valid` windows (as scikit-image). Deviation: the official takes L over the whole batch
  of first maps; here per image, so a map's score does not depend on its batch-mates.
- `cosine`: cosine similarity of the flattened maps.
- `mse`: squared error summed over pixels (official `F.mse_loss(..., 'sum') / B`).
- `topk_intersection`: |topk(a) and topk(b)| / k (Ghorbani et al. 2019).
- `spearman`: Spearman rho with average ranks for ties (`scipy.stats.spearmanr`).
- `kendall_tau`: Kendall tau-b (`scipy.stats.kendalltau`), exact, O(n log^2 n) (Knight).
- `insertion_curve` / `aopc`: the official `test_insertion.py` game (brief section 3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PCC_EPS = 1e-12


def _flat(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(
            f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.flatten(1), b.flatten(1)


def pcc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image; 0 where a map is constant. Returns (B,)."""
    a, b = _flat(a, b)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = (a.pow(2).sum(1) * b.pow(2).sum(1)).sqrt().clamp_min(PCC_EPS)
    return (a * b).sum(1) / denom


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the flattened maps (official `calc_cossim`). Returns (B,)."""
    a, b = _flat(a, b)
    return F.cosine_similarity(a, b, dim=1)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared error summed over pixels per image (official: `mse_loss(sum) / B`)."""
    a, b = _flat(a, b)
    return (a - b).pow(2).sum(1)


def gaussian_window(size: int = 7, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    """Normalised (size, size) Gaussian: outer product of the normalised 1-D kernel."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    win_size: int = 7,
    sigma: float = 1.5,
    padding: str = "same",
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean SSIM per image of (B, H, W) maps; `a` sets the range L for C1, C2.

    padding: `same` (zero padding of win_size // 2, mean over all H*W positions, the
    official `_ssim`) or `valid` (only windows inside the map; scikit-image's
    `structural_similarity(gaussian_weights=True, use_sample_covariance=False)` for a
    Gaussian truncated at the same radius). Returns (B,).
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(
            f"ssim takes two (B, H, W) maps, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if padding not in ("same", "valid"):
        raise ValueError(f"padding {padding!r}: expected 'same' or 'valid'")
    window = gaussian_window(win_size, sigma, a.dtype).to(a.device)[None, None]
    pad = win_size // 2 if padding == "same" else 0
    stack = torch.stack([a, b, a * a, b * b, a * b], 1)  # (B, 5, H, W)
    filt = F.conv2d(stack.flatten(0, 1)[:, None], window, padding=pad)  # (B*5, 1, H', W')
    filt = filt.view(a.shape[0], 5, *filt.shape[-2:])
    mu_a, mu_b, e_aa, e_bb, e_ab = filt.unbind(1)
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    flat = a.flatten(1)
    data_range = (flat.max(1).values - flat.min(1).values).view(-1, 1, 1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(1)


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of the k largest entries of `a` that are among the k largest of `b`."""
    a, b = _flat(a, b)
    if not 0 < k <= a.shape[1]:
        raise ValueError(f"top-k intersection: k={k} must be in 1..{a.shape[1]}")
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, 1).indices, True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(k, 1).indices, True)
    return (top_a & top_b).sum(1).to(a.dtype) / k


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks per row, ties sharing their average rank (scipy `rankdata`)."""
    ordered = x.sort(1).values
    below = torch.searchsorted(ordered, x.contiguous(), right=False)
    upto = torch.searchsorted(ordered, x.contiguous(), right=True)
    return (below + upto + 1).to(torch.float64) / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rho per image: Pearson correlation of average ranks. Returns (B,)."""
    a, b = _flat(a, b)
    return pcc(average_ranks(a), average_ranks(b)).to(a.dtype)


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall tau-b per image (scipy `kendalltau`), exact, in O(n log^2 n) per image.

    Knight's algorithm, vectorised over the batch: sort the pixels by (a, b); the
    discordant pairs are then the strict inversions of b, counted by a bottom-up merge
    (at each level, `searchsorted` of every right block into its sorted left block).
    With n0 = n(n-1)/2 pairs, n1 / n2 the pairs tied in a / in b and n3 those tied in both,
    S = n0 - n1 - n2 + n3 - 2 * inversions and tau_b = S / sqrt((n0 - n1)(n0 - n2)).
    Returns (B,); 0 where a map is constant.
    """
    a, b = _flat(a, b)
    a, b = a.double(), b.double()
    batch, n = a.shape
    order = b.argsort(dim=1, stable=True)  # lexicographic (a, b): sort by b, then stably by a
    a, b = a.gather(1, order), b.gather(1, order)
    order = a.argsort(dim=1, stable=True)
    a, b = a.gather(1, order), b.gather(1, order)
    inversions = _count_inversions(b)
    n0 = n * (n - 1) / 2
    n1 = _tied_pairs(a)
    n2 = _tied_pairs(b.sort(1).values)
    joint_break = torch.ones_like(a, dtype=torch.bool)
    joint_break[:, 1:] = (a[:, 1:] != a[:, :-1]) | (b[:, 1:] != b[:, :-1])
    n3 = _run_tied_pairs(joint_break)
    s = n0 - n1 - n2 + n3 - 2 * inversions
    denom = ((n0 - n1) * (n0 - n2)).sqrt()
    return torch.where(denom > 0, s / denom.clamp_min(1e-300), torch.zeros_like(s))


def _count_inversions(v: torch.Tensor) -> torch.Tensor:
    """#{i < j : v_i > v_j} per row of (B, n), by a bottom-up merge sort."""
    batch, n = v.shape
    size = 1 << max(0, (n - 1).bit_length())
    pad = torch.full((batch, size - n), float("inf"), dtype=v.dtype, device=v.device)
    v = torch.cat([v, pad], 1)  # trailing +inf creates no inversion
    total = torch.zeros(batch, dtype=torch.float64, device=v.device)
    width = 1
    while width < size:
        pairs = v.view(batch, size // (2 * width), 2, width)
        left, right = pairs[:, :, 0].contiguous(), pairs[:, :, 1].contiguous()
        not_above = torch.searchsorted(left, right, right=True)  # left entries <= each right
        total += (width - not_above).sum((1, 2)).double()
        v = pairs.view(batch, size // (2 * width), 2 * width).sort(-1).values.view(batch, size)
        width *= 2
    return total


def _tied_pairs(sorted_rows: torch.Tensor) -> torch.Tensor:
    """sum over tie groups of t(t-1)/2, for rows sorted ascending."""
    breaks = torch.ones_like(sorted_rows, dtype=torch.bool)
    breaks[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    return _run_tied_pairs(breaks)


def _run_tied_pairs(breaks: torch.Tensor) -> torch.Tensor:
    """sum over runs (a run starts where `breaks` is True) of t(t-1)/2, per row."""
    batch, n = breaks.shape
    run_id = breaks.long().cumsum(1) - 1  # (B, n), runs numbered from 0 in each row
    lengths = torch.zeros(batch, n, dtype=torch.float64, device=breaks.device)
    lengths.scatter_add_(1, run_id, torch.ones_like(lengths))
    return (lengths * (lengths - 1) / 2).sum(1)


def similarity_report(
    maps: torch.Tensor, ref: torch.Tensor, *, k: int | None = None, rank_metrics: bool = True
) -> dict[str, torch.Tensor]:
    """Every map-similarity metric of `maps` against `ref` (both (B, H, W)), per image.

    Keys: mse, pcc, ssim, cosine, ssim_sumnorm (SSIM after dividing each map by its L1 norm,
    official `sumnorm_ssim`), and with `rank_metrics` spearman, kendall, plus topk
    (k default: `default_topk`, 100 on 32x32 maps and 1000 on 224x224, brief section 7).
    """
    out = {
        "mse": mse(maps, ref),
        "pcc": pcc(maps, ref),
        "ssim": ssim(maps, ref),
        "cosine": cosine(maps, ref),
    }
    l1 = lambda h: h / (h.abs().flatten(1).sum(1).view(-1, 1, 1) + 1e-8)  # noqa: E731
    out["ssim_sumnorm"] = ssim(l1(maps), l1(ref))
    if rank_metrics:
        out["topk"] = topk_intersection(maps, ref, k or default_topk(maps))
        out["spearman"] = spearman(maps, ref)
        out["kendall"] = kendall_tau(maps, ref)
    return out


TOPK_PER_1024_PIXELS = 100  # ART / RAR on 32x32 CIFAR (brief sections 2.3, 7)
TOPK_MAX = 1000  # Ghorbani et al. on 224x224 ImageNet


def default_topk(maps: torch.Tensor) -> int:
    """k = 100 per 32*32 pixels, capped at 1000: 77 on 28x28, 100 on 32x32, 1000 on 224x224."""
    return max(1, min(TOPK_MAX, round(TOPK_PER_1024_PIXELS * maps[0].numel() / 1024)))


@torch.no_grad()
def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    n_ratios: int = 20,
) -> torch.Tensor:
    """Insertion game of the official `test_insertion.py`, per image.

    For ratio r = i / n_ratios, i = 0..n_ratios-1: keep the pixels whose map value is
    strictly above the value ranked r * H * W (descending), zero the others in normalised
    space (the dataset-mean colour), and read the softmax probability of the true class.

    Args: x (B, C, H, W) normalised; target (B,); maps (B, H, W).
    Returns: (B, n_ratios) probabilities (ratio 0 keeps no pixel, as the official code).
    """
    batch, hw = maps.shape[0], maps[0].numel()
    flat = maps.flatten(1)
    ordered = flat.sort(1, descending=True).values
    probs = []
    for i in range(n_ratios):
        pos = min(int(i / n_ratios * hw), hw - 1)
        keep = (flat > ordered[:, pos : pos + 1]).view(batch, 1, *maps.shape[1:])
        logits = model(x * keep)
        probs.append(logits.softmax(1).gather(1, target.view(-1, 1)).squeeze(1))
    return torch.stack(probs, 1)


def aopc(curve: torch.Tensor) -> torch.Tensor:
    """Area over the ratios: mean probability along an insertion curve, (B, R) -> (B,)."""
    return curve.mean(1)
