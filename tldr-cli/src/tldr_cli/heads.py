"""The last layers `tldr retrain` trains, saved in its run folder, loaded back, and scored.

    from tldr_cli.heads import load_head, scores
    from tldr_cli.rescore import run_features
    features = run_features("runs/toy-retrain")      # (N, D) test features of its classifier
    head = load_head("runs/toy-retrain", "DFR")      # or "TLDR"
    pred, score = scores(head, features)             # = items/predictions.parquet's rows

`features` are the classifier's penultimate features (`Classifier.forward_features`, what
`tldr retrain` caches; `tldr_cli.rescore.run_features` rebuilds them from the run's
config.json, through the same cache); `pred` is the predicted class and `score` the head's
probability for it.
Both heads read those features directly: TLDR's new Linear (its projector only
carried text into this space during training) and DFR's standardised logistic
regression.

Files (safetensors):
- `checkpoints/tldr_head.safetensors`: `weight` (C, D), `bias` (C,), float32 (nn.Linear);
- `checkpoints/dfr_head.safetensors`: `mean`, `scale` (D,), `coef` (1 or C, D),
  `intercept` (1 or C,), float64: logits ((x - mean) / scale) @ coef.T + intercept,
  exactly as scikit-learn's model computes them; a binary model (one row) scores class 1
  by its decision and class 0 by 0, so the argmax is sklearn's `decision > 0`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from labshared.errors import ConfigError
from labshared.runs import atomic_save_safetensors, read_safetensors

HEAD_FILES = {
    "TLDR": "checkpoints/tldr_head.safetensors",
    "DFR": "checkpoints/dfr_head.safetensors",
}


class StandardisedLinear(nn.Module):
    """DFR's model as a module: logits of ((x - mean) / scale) @ coef.T + intercept, in
    float64 (the precision scikit-learn fitted and predicts in)."""

    def __init__(self, mean, scale, coef, intercept) -> None:
        super().__init__()
        for name, value in (("mean", mean), ("scale", scale), ("coef", coef),
                            ("intercept", intercept)):  # fmt: skip
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(torch.float64) - self.mean) / self.scale
        logits = z @ self.coef.T + self.intercept  # (N, 1) binary or (N, C)
        if logits.shape[1] == 1:  # sklearn's binary model: class 1 iff decision > 0
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits


def save_dfr_head(run_dir: str | Path, model) -> Path:
    """Write DFR's fitted `dfr.LinearModel` as `checkpoints/dfr_head.safetensors`."""
    tensors = {k: torch.as_tensor(np.asarray(getattr(model, k), dtype=np.float64))
               for k in ("mean", "scale", "coef", "intercept")}  # fmt: skip
    return atomic_save_safetensors(Path(run_dir) / HEAD_FILES["DFR"], tensors, {"method": "DFR"})


def save_tldr_head(run_dir: str | Path, head: nn.Linear) -> Path:
    """Write TLDR's trained Linear as `checkpoints/tldr_head.safetensors`."""
    return atomic_save_safetensors(
        Path(run_dir) / HEAD_FILES["TLDR"], {"weight": head.weight, "bias": head.bias},
        {"method": "TLDR"},
    )  # fmt: skip


def load_head(run_dir: str | Path, method: str) -> nn.Module:
    """The head `method` ("TLDR" or "DFR") that `tldr retrain` saved in `run_dir`, in eval
    mode on the CPU.

    Raises:
        ConfigError: an unknown method, or the run folder has no such head (the run did not
            train it, or was written before heads were saved).
    """
    if method not in HEAD_FILES:
        raise ConfigError(f"head {method!r}: expected one of {', '.join(HEAD_FILES)}")
    path = Path(run_dir) / HEAD_FILES[method]
    expected = f"the {method} head `tldr retrain --method {method.lower()}` writes"
    tensors, _ = read_safetensors(path, flag="--run", expected=expected)
    if method == "DFR":
        return StandardisedLinear(*(tensors[k] for k in ("mean", "scale", "coef", "intercept")))
    weight = tensors["weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": tensors["bias"]})
    return head.eval()


@torch.no_grad()
def scores(head: nn.Module, feats: torch.Tensor, batch_size: int = 65536):
    """(pred (N,) int64, score (N,) float64): each row's argmax class under `head` and the
    softmax probability of that class, in chunks on the head's device."""
    param = next(iter(head.parameters()), None)
    device = (param if param is not None else next(iter(head.buffers()))).device
    preds, probs = [], []
    for i in range(0, len(feats), batch_size):
        logits = head(feats[i : i + batch_size].to(device))
        c = logits.argmax(dim=1)  # as `classifier.head_predictions`, on the head's own dtype
        probs.append(logits.double().softmax(dim=1).gather(1, c[:, None])[:, 0].cpu())
        preds.append(c.cpu())
    return torch.cat(preds).numpy().astype(np.int64), torch.cat(probs).numpy()
