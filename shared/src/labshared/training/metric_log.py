"""Every run logged as it goes: `metrics.jsonl`, and optionally TensorBoard and W&B.

Each logged step appends one JSON line to `<run>/metrics.jsonl` (step, epoch, wall time,
then the trainer's values: each loss term, learning rate, throughput), flushed at once, so
`tail -f` or pandas sees a running run. `--report-to tensorboard,wandb` (open_clip_train's
spelling; default none) also sends the same values to TensorBoard event files in
`<run>/tensorboard/` and to Weights & Biases (files in `<run>/wandb/`; offline unless
WANDB_MODE says otherwise or WANDB_API_KEY is set, so it works with no network).
Evaluations send their final metrics the same way (`log_final`). Only rank 0 writes.

The trackers are optional extras, imported only when asked for: a missing one is one
line naming the extra to install (torchtune's `metric_logging`, one `log` interface).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from labshared import distributed
from labshared.errors import ConfigError

JSONL_FILE = "metrics.jsonl"
REPORTERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # name -> module to import


def parse_report_to(value: str | None) -> tuple[str, ...]:
    """`--report-to` -> the trackers asked for, checked before any run folder exists.

    Raises:
        ConfigError: an unknown tracker, or one whose package is not installed.
    """
    names = [n.strip().lower() for n in (value or "").split(",") if n.strip()]
    names = [n for n in names if n not in ("none", "")]
    for name in names:
        if name not in REPORTERS:
            raise ConfigError(
                f"--report-to {name!r}: expected a comma-separated list of "
                f"{', '.join(REPORTERS)} (or none)"
            )
        if importlib.util.find_spec(REPORTERS[name]) is None:
            raise ConfigError(
                f"--report-to {name}: the {name} package is not installed; "
                f"pip install 'labshared[{name}]'"
            )
    return tuple(dict.fromkeys(names))


def _scalars(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Finite numeric leaves of a nested mapping, as ('a/b', value)."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _scalars(value, f"{name}/")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float) and math.isfinite(value):
            yield name, float(value)


class MetricLogger:
    """Appends logged steps to metrics.jsonl and forwards them to the chosen trackers.

    Args:
        run_dir: the run folder.
        report_to: trackers from `parse_report_to`.
        config: the run's config, given to W&B.
        resume_step: on `--resume`, lines past this step (logged after the last
            checkpoint by a run that then died) are dropped, so the file stays one history.
    """

    def __init__(
        self,
        run_dir: str | Path,
        report_to: tuple[str, ...] = (),
        *,
        config: Mapping[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / JSONL_FILE
        self.active = distributed.is_main()
        self._tb = self._wandb = None
        self._t0 = time.time()
        if not self.active:
            return
        if resume_step is not None:
            self._truncate(resume_step)
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter  # optional extra

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if "wandb" in report_to:
            import wandb  # optional extra

            mode = os.environ.get("WANDB_MODE") or (
                "online" if os.environ.get("WANDB_API_KEY") else "offline"
            )
            self._wandb = wandb.init(
                dir=str(self.run_dir), name=self.run_dir.name, mode=mode,
                config=dict(config or {}), reinit=True,
            )  # fmt: skip

    def _truncate(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]  # fmt: skip
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, values: Mapping[str, Any], *, epoch: float | None = None) -> None:
        """Record `values` at `step` (rank 0; other ranks return)."""
        if not self.active:
            return
        record = {"step": step, "epoch": epoch, "time": round(time.time() - self._t0, 3),
                  **values}  # fmt: skip
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = dict(_scalars(values))
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def log_final(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """An evaluation's (or a run's) final metrics, flattened to 'a/b' scalars."""
        self.log(step, {"final": dict(_scalars(metrics))})

    def close(self) -> None:
        """Flush and close the trackers."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def report_final(
    run_dir: str | Path,
    metrics: Mapping[str, Any],
    report_to: tuple[str, ...] = (),
    *,
    config: Mapping[str, Any] | None = None,
) -> None:
    """An evaluation's final metrics the way the trainers log theirs: one `final` line in
    `<run>/metrics.jsonl` (every number, flattened to 'a/b' names) and the same scalars to
    the `--report-to` trackers."""
    with MetricLogger(run_dir, report_to, config=config) as logger:
        logger.log_final(metrics)


def read_jsonl(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged steps of a run, in order."""
    path = Path(run_dir) / JSONL_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
