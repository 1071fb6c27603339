"""What `robattr attack` and `robattr eval` share: the trained model under test (the victim),
its test split and normalisation, which test images are scored, and the attribution
settings.

- `check_victim` runs before a run folder is made: the checkpoint resolves, its
  meta.json rebuilds a known model, and a dataset that lives on disk has a data root.
- `load_victim` rebuilds the model from its checkpoint's own meta (nanoGPT: the
  architecture never comes from flags) and the test split it was validated on.
- `iter_examples` yields the sample: by default every test image, misclassified ones
  included, as the official test modules do; `correct_only` keeps the images the model
  classifies correctly (ART / Ghorbani protocol); `limit` takes the first N of either.
- `predict` is where "correct" is decided, once, in fp32 (autocast off whatever
  `--precision` says, as the attributions and attacks run): the correct-only filter, each
  batch's `pred` and `robattr eval`'s clean accuracy all read its labels, so a GPU's bf16
  cannot call an image correct in one place and wrong in another.

The workflows (`attack.py`, `evaluate.py`) import from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from labshared.data.image_classification import (
    build_dataset,
    check_data_files,
    get_dataset_info,
)
from labshared.errors import ConfigError
from labshared.launch import CONFIG_FILE, read_header
from robattr_cli.checks import needs_data_root
from robattr_cli.manipulation import PixelBox
from robattr_cli.model import load_trained, read_meta, resolve_checkpoint

#: What an attack run leaves for `robattr eval --attacked`.
ATTACKED_FILE = "attacked.safetensors"


def training_data_root(ckpt: str | Path) -> str | None:
    """The data root the checkpoint's training run used (its config.json), if any."""
    run_dir = Path(ckpt).parent.parent  # <run>/checkpoints/<name>/
    if not (run_dir / CONFIG_FILE).is_file():
        return None  # a checkpoint folder copied out of its run
    return read_header(run_dir).get("config", {}).get("data_root")


def check_victim(checkpoint: str, which: str, data_root: str | None) -> None:
    """What `load_victim` needs, checked before a run folder is made.

    The weights are loaded once here, on the CPU (a LeNet or ResNet-18: well under a
    second), so a corrupt or foreign model.safetensors is refused before the folder exists.

    Raises:
        ConfigError: no checkpoint there, a meta.json that cannot rebuild the model, weights
            that do not load, or a dataset that needs a data root and neither --data-root
            nor the training run names one.
        DataLayoutError: the test split's files are not where the data root says.
    """
    ckpt = resolve_checkpoint(checkpoint, which)
    dataset = read_meta(ckpt)["dataset"]
    root = data_root or training_data_root(ckpt)
    if needs_data_root(dataset) and not root:
        raise ConfigError(
            f"--data-root: the model of {ckpt} was trained on {dataset}, and its training "
            f"run's config.json names no data root; expected:\n{get_dataset_info(dataset).layout}"
        )
    check_data_files(dataset, root, ("test",))
    load_trained(ckpt, "cpu")


def load_victim(
    checkpoint: str, which: str, data_root: str | None, device: torch.device
) -> tuple[nn.Module, dict[str, Any], Dataset, PixelBox]:
    """(model, meta, test dataset, PixelBox) from a trained checkpoint.

    The model's parameters are frozen (attacks differentiate with respect to the input
    only). The data root defaults to the training run's; the MNIST-5k toy's split comes
    from the checkpoint's `toy_seed`, so the test digits are those the model was
    validated on.
    """
    model, meta = load_trained(checkpoint, device, which)
    for p in model.parameters():
        p.requires_grad_(False)
    dataset = build_dataset(
        meta["dataset"], data_root or training_data_root(meta["checkpoint"]), "test",
        train_transform=False, data_seed=int(meta.get("toy_seed", 0)),
    )  # fmt: skip
    box = PixelBox.from_stats(meta["mean"], meta["std"], device)
    return model, meta, dataset, box


def attribution_options(
    method: str, ig_steps: int, ig_rule: str, sg_samples: int, sg_noise: float, generator
) -> dict[str, Any]:
    """The keyword arguments `attribute` takes for `method` (none for grad/input-x-grad)."""
    if method == "integrated-gradients":
        return {"n_steps": ig_steps, "integration": ig_rule}
    if method == "path-averaged-grad":
        return {"n_steps": ig_steps}
    if method == "smoothgrad":
        return {"n_samples": sg_samples, "noise_level": sg_noise, "generator": generator}
    return {}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B,) top-1 labels in fp32, autocast off: the one precision robattr decides "correct"
    in (the attributions and attacks run in fp32 too)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return model(x.float()).argmax(1)


def split_predictions(
    model: nn.Module, dataset, batch_size: int, device: torch.device
) -> torch.Tensor:
    """(N,) `predict` labels of the whole split, on the CPU, in dataset order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    return torch.cat([predict(model, x.to(device)).cpu() for x, _ in loader])


def iter_examples(
    model: nn.Module,
    dataset,
    limit: int | None,
    batch_size: int,
    device: torch.device,
    correct_only: bool = False,
    predictions: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches (x, y, index, pred) of test examples in dataset order: the first `limit` of
    them (None: all), or with `correct_only` the first `limit` whose `pred` equals y.
    `pred` is `predictions[index]` when the split's predictions were made already
    (`split_predictions`), else `predict` on the batch; either way the filter and the
    caller read the same labels. Each batch holds `batch_size` examples (the last one
    fewer)."""
    limit = len(dataset) if limit is None else limit
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    pending: list[tuple[torch.Tensor, ...]] = []
    emitted = offset = 0
    for x, y in loader:
        if offset >= limit and not correct_only:
            return
        x, y = x.to(device), y.to(device)
        index = torch.arange(offset, offset + len(y))
        offset += len(y)
        pred = predict(model, x) if predictions is None else predictions[index].to(device)
        keep = (pred == y) if correct_only else torch.ones_like(y, dtype=torch.bool)
        pending.append((x[keep], y[keep], index[keep.cpu()], pred[keep]))
        xs, ys, ids, ps = (torch.cat(t) for t in zip(*pending, strict=True))
        while len(ys) >= batch_size or (len(ys) and emitted + len(ys) >= limit):
            take = min(batch_size, limit - emitted)
            yield xs[:take], ys[:take], ids[:take], ps[:take]
            emitted += take
            if emitted >= limit:
                return
            xs, ys, ids, ps = xs[take:], ys[take:], ids[take:], ps[take:]
        pending = [(xs, ys, ids, ps)]
    if pending and len(pending[0][1]):  # the split ran out: the remainder is the last batch
        yield pending[0]


def sample_size(dataset, limit: int | None) -> int:
    """How many examples `iter_examples` yields at most (for progress bars)."""
    return len(dataset) if limit is None else min(limit, len(dataset))


def mean_metrics(per_image: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """{metric: mean over every image} of per-batch lists of per-image values."""
    return {k: float(torch.cat(v).double().mean()) for k, v in per_image.items()}
