"""Re-scoring a finished run: the features its classifier gives, rebuilt from the run's
config.json, for the heads `tldr_cli.heads.load_head` reads back. Its own module because it
needs the whole feature pipeline, which the heads module (imported by the training code)
must not import."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from labshared.device import setup_runtime
from labshared.launch import read_header
from tldr_cli.config import TLDRConfig
from tldr_cli.pipeline import prepare


def run_features(run_dir: str | Path, split: str = "test", device: str = "cpu") -> torch.Tensor:
    """(N, D) features of `split` under the classifier a `tldr retrain` / `tldr erm` run
    used, rebuilt from its config.json (the same data, classifier and feature cache)."""
    header = read_header(run_dir)
    names = {f.name for f in dataclasses.fields(TLDRConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in header["config"].items() if k in names}  # fmt: skip
    if header.get("command") == "erm":  # the classifier is the run's own
        values["classifier"] = str(Path(run_dir) / "checkpoints" / "final")
    runtime = setup_runtime(device, "fp32", header["runtime"]["seed"])
    ctx = prepare(TLDRConfig(**values), runtime, True, feature_splits=(split,),
                  with_projector=False)  # fmt: skip
    return ctx.features[split]
