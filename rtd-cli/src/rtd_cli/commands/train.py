"""`rtd train`: the `TrainConfig` fields are the options; the work is `rtd_cli.train`'s
`check` and `run`."""

from labshared.options import TRAINING_RUN, RunFlags, config_command
from rtd_cli.commands.training import StopAfterOpt, run_training
from rtd_cli.config import (
    RENAMED_PRESETS,
    TRAIN_KNOBS,
    TRAIN_PRESET_PROCESSES,
    TRAIN_PRESETS,
    TrainConfig,
    validate_train,
)


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
    run_training("train", train, cfg, run, stop_after, keys, TRAIN_KNOBS,
                 TRAIN_PRESET_PROCESSES, no_cache=run.no_cache)  # fmt: skip
