"""The one training kit of the three tools: every trainer (rtd train, rtd train-phi,
robattr train, tldr erm, the tldr head) builds its loop from these parts.

- `state`: what a checkpoint holds (model, optimizer, scheduler, GradScaler, each rank's
  generators and global RNG, the trainer's progress) and how it is saved, restored and
  used to start a new run (`--init-from`);
- `interrupt`: SIGINT / SIGTERM turn into "save at the end of this step, mark the run
  interrupted, print the command that resumes it";
- `metric_log`: one JSON line per logged step in `metrics.jsonl`, and optionally
  TensorBoard and Weights & Biases (`--report-to`);
- `progress`: one progress display (a bar on a terminal, timestamped lines with an ETA
  in a log file);
- `order`: a data order drawn from (seed, step, rank), so it needs no saved state.
"""

from labshared.training.interrupt import Interrupt, Interrupted, resume_command
from labshared.training.metric_log import MetricLogger, parse_report_to, report_final
from labshared.training.order import BatchSampler
from labshared.training.progress import StepProgress
from labshared.training.state import (
    TrainState,
    load_init_weights,
    restore_state,
    save_state,
    write_status,
)

__all__ = [
    "BatchSampler",
    "Interrupt",
    "Interrupted",
    "MetricLogger",
    "StepProgress",
    "TrainState",
    "load_init_weights",
    "parse_report_to",
    "report_final",
    "restore_state",
    "resume_command",
    "save_state",
    "write_status",
]
