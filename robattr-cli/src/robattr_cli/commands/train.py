"""`robattr train`: the options are `TrainConfig`'s fields; the work is in `robattr_cli.train`."""

import dataclasses
from typing import Annotated

import typer

from labshared import distributed
from labshared.cli import print_json
from labshared.options import TRAINING_RUN, RunFlags, config_command
from robattr_cli import __version__
from robattr_cli.checks import validate_train
from robattr_cli.config import (
    PRESET_PROCESSES,
    PRESETS,
    TRAIN_SEED,
    TrainConfig,
    start_preset,
)

#: `labshared.options.TRAINING_RUN` less --no-cache: robattr caches nothing (a flag must
#: never be ignored).
TRAIN_RUN = tuple(name for name in TRAINING_RUN if name != "no_cache")

CheckDataOpt = Annotated[
    bool,
    typer.Option(
        "--check-data",
        help="Check the dataset under --data-root (index, image counts per split and class, "
        "one decoded image per class) and exit; names the first missing file.",
    ),
]


@config_command(TrainConfig, presets=PRESETS, default_preset="mnist-toy", run=TRAIN_RUN,
                validate=validate_train,
                start=start_preset)  # fmt: skip
def train_cmd(cfg: TrainConfig, run: RunFlags, check_data: CheckDataOpt = False) -> None:
    """Train a classifier with an attribution-robustness regulariser (paper: l2cos).

    Presets: cifar10-lenet, cifar10-resnet18, imagenet100-resnet18 (paper), mnist-toy (CPU).
    Without --preset: the preset of --dataset/--model (mnist-toy when neither is given).
    --resume continues -o from its own config.json; flags may change only run-time knobs.
    Without --seed: 1234, the official seed.
    """
    # the workflow (data loaders, trackers) loads only when the command runs
    from robattr_cli import train
    from robattr_cli.datacheck import check_data as run_check

    if check_data:
        print_json(run_check(cfg))
        return
    if run.seed is None:
        run = dataclasses.replace(run, seed=TRAIN_SEED)
    try:
        started = run.start(
            "robattr", "train", cfg, version=__version__, validate=lambda: train.check(cfg),
            batch_size=cfg.batch_size, preset_processes=PRESET_PROCESSES.get(run.preset),
        )  # fmt: skip
        summary = train.run(cfg, started.runtime, started.dir, resume=started.resumed,
                            init_from=started.init_from, report_to=run.trackers())  # fmt: skip
    finally:
        distributed.cleanup()
    summary = {k: v for k, v in summary.items() if k != "history"}
    print_json({"run_dir": str(started.dir), **summary})
