"""Group-balanced downsampling, shared by TLDR's text dataset and the DFR baseline.

Every non-empty group is cut to the size of the smallest non-empty group by sampling
without replacement, and the union is shuffled (`random.sample` per group in
`TLDR:utils/custom_indices_sampler.py`; `np.random.shuffle` + `g[:min_g]` in DFR's
`dfr_evaluate_spurious.py`). Randomness arrives as a `torch.Generator`, so each call with
the same generator state gives the same sample and successive calls give fresh ones.
"""

from __future__ import annotations

import torch


def balanced_indices(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of a group-balanced random subsample, shuffled.

    Args:
        groups: (N,) integer group id per sample; ids need not be contiguous.
        generator: the source of randomness (CPU generator).

    Returns:
        (G * m,) int64 indices into `groups`, where G is the number of non-empty groups and
        m the size of the smallest one; every group contributes exactly m distinct samples.
    """
    groups = torch.as_tensor(groups).reshape(-1).cpu()
    if groups.numel() == 0:
        raise ValueError("balanced_indices got an empty group array")
    ids, counts = torch.unique(groups, return_counts=True)
    m = int(counts.min())
    # One permutation per call, then a stable sort by group keeps, inside each group, the
    # samples in random order; the first m of every group are the draw.
    perm = torch.randperm(groups.numel(), generator=generator)
    order = perm[torch.argsort(groups[perm], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    take = (starts.unsqueeze(1) + torch.arange(m).unsqueeze(0)).reshape(-1)
    chosen = order[take]
    return chosen[torch.randperm(chosen.numel(), generator=generator)]
