"""`rtd train` and `rtd train-phi`: the config's fields are the options
(`labshared.options.config_command`); the work is in `train.py` / `train_phi.py`."""

from typing import Annotated

import typer

from labshared import distributed
from labshared.cli import print_json
from labshared.config import RUNTIME_KNOBS
from labshared.options import TRAINING_RUN, RunFlags, config_command
from labshared.training import parse_report_to
from rtd_cli import __version__
from rtd_cli.config import (
    PHI_PRESET_PROCESSES,
    PHI_PRESETS,
    RENAMED_PRESETS,
    TRAIN_KNOBS,
    TRAIN_PANEL,
    TRAIN_PRESET_PROCESSES,
    TRAIN_PRESETS,
    PhiConfig,
    TrainConfig,
    validate_phi,
    validate_train,
)

StopAfterOpt = Annotated[
    int | None,
    typer.Option(
        help="Leave after N steps of this invocation with a checkpoint; continue with --resume.",
        rich_help_panel=TRAIN_PANEL,
    ),
]


@config_command(TrainConfig, presets=TRAIN_PRESETS, default_preset="rtd-vit-l14",
                run=TRAINING_RUN, validate=validate_train, renamed=RENAMED_PRESETS)  # fmt: skip
def train_cmd(cfg: TrainConfig, run: RunFlags, stop_after: StopAfterOpt = None) -> None:
    """Fine-tune the CLIP text tower with RTD on text triplets (runs under torchrun too).

    Presets: rtd-vit-l14 (what the official RTD run computed: ONE process at batch 128. Its
    run.sh starts 4 GPUs, but train_text_encoder.py line 262 calls the tower through
    `.module`, past DDP, so gradients were never averaged and rank 0's copy was saved),
    rtd-vit-l14-ddp4 (4 processes x 128, gradients averaged: 512 per step), rtd-vit-b32,
    rtd-vit-bigg14 (the one-process values on those backbones), toy. Without --seed, the
    preset's (the paper's 12345).
    """
    # open_clip and the models load only when a command runs, so `rtd --help` stays fast
    from rtd_cli import train

    keys = ("step", "loss", "stopped", "text_tower", "best", "triplets_per_second")
    _run_and_report("train", train, cfg, run, stop_after, keys, TRAIN_KNOBS,
                    TRAIN_PRESET_PROCESSES, no_cache=run.no_cache)  # fmt: skip


@config_command(PhiConfig, presets=PHI_PRESETS, default_preset="lincir-vit-l14",
                run=TRAINING_RUN, validate=validate_phi, renamed=RENAMED_PRESETS)  # fmt: skip
def train_phi_cmd(cfg: PhiConfig, run: RunFlags, stop_after: StopAfterOpt = None) -> None:
    """Train the projection phi LinCIR-style on captions only (keyword masking + MSE).

    Presets: lincir-vit-l14 (LinCIR's README run: 8 processes x 64, gradients averaged),
    lincir-vit-bigg14, lincir-vit-b32 (its values on those backbones), toy. The lincir
    presets need spaCy and en_core_web_sm (LinCIR's masking) unless --keywords builtin.
    """
    from rtd_cli import train_phi

    keys = ("step", "loss", "stopped", "phi", "keywords", "slot_fallbacks")
    _run_and_report("train-phi", train_phi, cfg, run, stop_after, keys, RUNTIME_KNOBS,
                    PHI_PRESET_PROCESSES)  # fmt: skip


def _run_and_report(
    command: str, workflow, cfg, run: RunFlags, stop_after: int | None,
    keys: tuple[str, ...], allowed, processes, **run_kwargs,
) -> None:  # fmt: skip
    """Start the run (`--report-to` and the workflow's `check_inputs` first, so a failed
    check leaves no folder), run `workflow.run` with what the check read, leave the process
    group on every rank, and print the `keys` of its metrics on rank 0. `processes`: preset
    -> the process count it was designed for (the header records the global batch; another
    count warns). Ctrl-C / SIGTERM saves the step and raises `Interrupted` (one line with
    the resume command, exit 130 / 143); `--resume` of a finished run raises `RunFinished`
    (exit 0)."""
    inputs = []  # what the checks read: the trackers, then triplets or captions, ...

    def check() -> None:
        inputs.append(parse_report_to(run.report_to))
        inputs.append(workflow.check_inputs(cfg))

    try:
        started = run.start(
            "rtd", command, cfg, version=__version__, allowed_on_resume=allowed,
            validate=check, batch_size=cfg.batch_size,
            preset_processes=processes.get(run.preset),
        )  # fmt: skip
        metrics = workflow.run(cfg, started, inputs[1], stop_after=stop_after,
                               report_to=inputs[0], **run_kwargs)  # fmt: skip
    finally:
        distributed.cleanup()
    if started.runtime.is_main:
        print_json({"run_dir": str(started.dir), **{k: metrics[k] for k in keys if k in metrics}})
