"""What each rank of `robattr train` reads: a fixed subset of a split, this epoch's shard
in an order fixed by (seed, epoch) (so a resumed run skips exactly the batches it has
seen), and the validation pass over the test split, each image counted once."""

from __future__ import annotations

import math
import signal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from labshared import distributed
from labshared.device import Runtime
from robattr_cli.config import TrainConfig


def limit(dataset: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of `n` examples (seed 0, independent of --seed), or all."""
    if n is None or n >= len(dataset):
        return dataset
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return Subset(dataset, sorted(idx.tolist()))


def train_loader(
    dataset: Dataset, cfg: TrainConfig, runtime: Runtime, epoch: int, skip_batches: int
) -> DataLoader:
    """This rank's shuffled shard for `epoch` (order fixed by seed and epoch), without the
    first `skip_batches` batches (already trained on before an interruption)."""
    sampler = DistributedSampler(
        dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True,
        seed=runtime.seed,
    )  # fmt: skip
    sampler.set_epoch(epoch)
    indices = list(sampler)[skip_batches * cfg.batch_size :]
    workers_seed = torch.Generator().manual_seed(
        runtime.seed * 100_003 + runtime.rank * 1009 + epoch
    )
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=indices,
        num_workers=cfg.num_workers,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=False,
        generator=workers_seed,
        worker_init_fn=quiet_worker,
    )


def quiet_worker(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM: a terminal's Ctrl-C reaches the whole
    process group, and a worker killed by it fails the main process's next batch before the
    step's checkpoint is saved. The main process still ends them (and a worker whose parent
    died exits by itself, torch's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def steps_per_epoch(n_train: int, cfg: TrainConfig, runtime: Runtime) -> int:
    """Batches of one rank's shard per epoch (DistributedSampler pads the shards evenly)."""
    return math.ceil(math.ceil(n_train / runtime.world_size) / cfg.batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, cfg: TrainConfig, runtime: Runtime) -> dict:
    """Validation accuracy and cross-entropy; each rank takes every world_size-th image and
    the sums are reduced, so every image counts exactly once."""
    model.eval()
    shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
    loader = DataLoader(
        shard, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        pin_memory=runtime.device.type == "cuda", worker_init_fn=quiet_worker,
    )  # fmt: skip
    sums = torch.zeros(3, device=runtime.device)  # n, correct, ce sum
    for x, y in loader:
        x, y = x.to(runtime.device), y.to(runtime.device)
        with runtime.autocast():
            logits = model(x)
        sums += torch.stack(
            [
                torch.tensor(float(len(y)), device=runtime.device),
                (logits.argmax(1) == y).sum().float(),
                F.cross_entropy(logits.float(), y, reduction="sum"),
            ]
        )
    sums = distributed.all_reduce_mean(sums) * runtime.world_size
    model.train()
    n = max(sums[0].item(), 1.0)
    return {"val_acc": sums[1].item() / n, "val_ce": sums[2].item() / n}
