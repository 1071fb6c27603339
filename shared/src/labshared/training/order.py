"""The data order of a trainer as a function of (seed, step, rank): nothing to save.

`BatchSampler` cuts an endless stream of per-epoch permutations, each seeded by
(seed, epoch), into global batches of `batch_size * world_size` rows and then per rank.
Step s of rank r always reads the same rows, so a resumed run sees exactly the data it
would have seen without a sampler state in the checkpoint (rtd train and train-phi read
their in-memory sets this way; any trainer that indexes its data by row can).
"""

from __future__ import annotations

import torch


class BatchSampler:
    """Stateless row order over `n` rows.

    Args:
        n: rows in the data set.
        batch_size: rows per rank per step.
        seed: the run's seed (each epoch's permutation is drawn from (seed, epoch)).
        rank, world_size: this process and how many share a global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most two epochs
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """(B,) row indices of this rank's batch at `step` (0-based)."""
        start = (step * self.world_size + self.rank) * self.batch_size
        pos = torch.arange(start, start + self.batch_size)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch)[pos[sel] % self.n]
        return out

    def epoch(self, step: int) -> float:
        """Passes over the data done after `step` steps (all ranks together)."""
        return step * self.batch_size * self.world_size / max(self.n, 1)
