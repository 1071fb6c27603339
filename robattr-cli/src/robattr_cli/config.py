"""Every robattr config: `TrainConfig` (with its presets), `AttackConfig`, `EvalConfig`.

Each field carries its own flag (`labshared.options.opt`): name, type, default, help and,
for closed choices, the values it accepts. The commands are built from these fields
(`robattr_cli.commands`), so a flag cannot be dropped on its way into the config.

The training presets come from the official `scripts/cifar_lenet.sh`, `cifar_resnet.sh`
and `imagenet_resnet.sh` (optimiser, weight decay, epochs, LR milestones, and the l2+cosd
and Hessian weights per setting), with `project/main.py`'s trainer settings (gradient
clipping 0.5 by norm, best checkpoint by validation accuracy, seed 1234) and the
DataModules' batch sizes (128 for training, 100 for evaluation). `robattr attack` and
`robattr eval` have no presets: their dataclass defaults are the official evaluation's.

Precedence: dataclass defaults < preset < `--config` file < flags actually passed, through
`labshared.config.resolve`; the checks of `robattr_cli.checks` run on every resolved config
before any data or weights are touched. Without --preset, `robattr train` starts from the
preset of --dataset/--model (`start_preset`); on --resume the run's own config takes the
preset's place, and `labshared.launch.start_run` refuses any changed field but the run-time
knobs (`labshared.config.RUNTIME_KNOBS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from labshared.config import resolve, unknown_name
from labshared.data.image_classification import DATASETS
from labshared.errors import ConfigError
from labshared.launch import read_header
from labshared.options import opt
from robattr_cli.attributions import ATTRIBUTIONS, INTEGRATION_RULES
from robattr_cli.checks import validate_train
from robattr_cli.manipulation import OPTIMIZERS as ATTACK_OPTIMIZERS
from robattr_cli.model import ACTIVATIONS, MODELS
from robattr_cli.regularizers import PERTURBATIONS, REGULARIZERS

OPTIMIZERS = ("adam", "adamw", "sgd")
#: Preset name of a config resolved from the dataclass defaults, for a (dataset, model)
#: pair no paper setting covers (never accepted from --preset).
CUSTOM = "custom"
ATTACKS = ("frame", "topk", "random")
# frame: official --adv_eps 4; random: official --rand_eps 4; topk: Ghorbani et al. 8.
DEFAULT_EPS = {"frame": 4.0, "topk": 8.0, "random": 4.0}

MODEL_PANEL = "Model and data"
REG_PANEL = "Regulariser"
OPT_PANEL = "Optimisation"
ATTR_PANEL = "Attribution"
ATTACK_PANEL = "Attack"


def parse_milestones(text: str | None) -> tuple[int, ...] | None:
    """'100,150' -> (100, 150); '' -> () (no decay); None -> None (keep the preset)."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"--milestones {text!r}: expected comma-separated epochs") from None


def parse_eps_list(text: str | None) -> tuple[float, ...] | None:
    """'4,8,16' -> (4.0, 8.0, 16.0); '0' or '' -> () (RPS off); None -> None (default)."""
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(
            f"--rps-eps {text!r}: expected comma-separated budgets in pixels/255, e.g. 4,8,16"
        ) from None
    if values == (0.0,):
        return ()
    if any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--rps-eps {text!r}: expected distinct budgets > 0 (or 0 for off)")
    return values


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved as config.json)."""

    preset: str = opt(CUSTOM, "The preset this config started from (its --preset).")
    dataset: str = opt("mnist", "cifar10, imagenet100 or mnist (offline MNIST-5k).",
                       panel=MODEL_PANEL, choices=DATASETS)  # fmt: skip
    data_root: str | None = opt(
        None,
        "CIFAR-10: folder holding cifar-10-batches-py, a save_to_disk folder, or hf:<dataset "
        "id>; ImageNet-100: folder with train/ and val/ (or test/). None for mnist.",
        panel=MODEL_PANEL,
    )
    toy_seed: int = opt(
        0,
        "MNIST-5k toy only: seed of its 4,000 / 1,000 train/test split (0: the default "
        "split; the real datasets keep their official splits).",
        panel=MODEL_PANEL,
    )
    model: str = opt("mnist-cnn", "lenet, resnet18-cifar, resnet18 (ImageNet-100) or mnist-cnn.",
                     panel=MODEL_PANEL, choices=MODELS)  # fmt: skip
    activation: str = opt("softplus", "softplus (paper) or relu: replaces every ReLU module.",
                          panel=MODEL_PANEL, choices=ACTIVATIONS)  # fmt: skip
    beta: float = opt(3.0, "Softplus beta (paper 3).", panel=MODEL_PANEL)
    regularizer: str = opt("l2cos", "l2cos (paper), l2 or cos (ablations), hessian (baseline) "
                           "or none.", panel=REG_PANEL, choices=REGULARIZERS)  # fmt: skip
    eps: float = opt(4.0, "Noise radius in pixel units of 1/255 (paper 4 = 4/255).",
                     panel=REG_PANEL)  # fmt: skip
    lambda_l2: float = opt(1.0, "Weight of mean ||g(x) - g(x+delta)||^2.", panel=REG_PANEL)
    lambda_cos: float = opt(1.0, "Weight of the cosine distance (1 - cos)/2.", panel=REG_PANEL)
    lambda_hessian: float = opt(1.0, "Weight of the Hutchinson ||H v||^2 term.", panel=REG_PANEL)
    perturb: str = opt("uniform", "Noise law: uniform in the eps box (paper) or gaussian.",
                       panel=REG_PANEL, choices=PERTURBATIONS)  # fmt: skip
    detach_clean_grad: bool = opt(True, "Treat g(x) as a constant target (official default).",
                                  panel=REG_PANEL)  # fmt: skip
    optimizer: str = opt("adamw", "adam, adamw or sgd (momentum 0.9, Nesterov).",
                         panel=OPT_PANEL, choices=OPTIMIZERS)  # fmt: skip
    lr: float = opt(1e-3, "Learning rate.", panel=OPT_PANEL)
    weight_decay: float = opt(4e-5, "Weight decay.", panel=OPT_PANEL)
    epochs: int = opt(300, "Training epochs.", panel=OPT_PANEL)
    milestones: tuple[int, ...] = opt(
        (150, 225), "Epochs where the LR is multiplied by --lr-gamma, e.g. '100,150' ('' for "
        "none).", panel=OPT_PANEL, cli_type=str, parse=parse_milestones,
    )  # fmt: skip
    lr_gamma: float = opt(0.1, "LR decay factor at each milestone (official 0.1).",
                          panel=OPT_PANEL)  # fmt: skip
    batch_size: int = opt(128, "Training batch per process (global batch = batch x processes).",
                          panel=OPT_PANEL)  # fmt: skip
    eval_batch_size: int = opt(100, "Validation batch (official 100).", panel=OPT_PANEL)
    grad_clip: float = opt(0.5, "Global gradient-norm clip (official 0.5; 0 = off).",
                           panel=OPT_PANEL)  # fmt: skip
    num_workers: int = opt(4, "DataLoader worker processes.", panel=OPT_PANEL)
    limit_train: int | None = opt(None, "Train on a fixed random subset of N images (smoke "
                                  "runs; none: the whole split).", panel=OPT_PANEL)  # fmt: skip
    limit_eval: int | None = opt(None, "Validate on a fixed random subset of N images.",
                                 panel=OPT_PANEL)  # fmt: skip
    save_every: int = opt(0, "Also checkpoint every N steps (epoch ends always save).",
                          panel=OPT_PANEL)  # fmt: skip
    log_every: int = opt(10, "Log every N steps to metrics.jsonl (and --report-to); each one "
                         "syncs the GPU. A run-time knob.", panel=OPT_PANEL)  # fmt: skip
    max_steps: int | None = opt(
        None, "Stop after N optimiser steps in total, with a checkpoint (part of the run: a "
        "resumed run keeps it).", panel=OPT_PANEL,
    )  # fmt: skip


PRESETS: dict[str, TrainConfig] = {
    # scripts/cifar_lenet.sh: Adam, wd 4e-5, 300 epochs, milestones 100/150;
    # l2+cosd eps 4, lambda_l2 0.01, lambda_cos 1.0; Hessian lambda 1e-3.
    "cifar10-lenet": TrainConfig(
        preset="cifar10-lenet",
        dataset="cifar10",
        model="lenet",
        optimizer="adam",
        weight_decay=4e-5,
        epochs=300,
        milestones=(100, 150),
        lambda_l2=0.01,
        lambda_cos=1.0,
        lambda_hessian=1e-3,
    ),  # fmt: skip
    # scripts/cifar_resnet.sh: AdamW, wd 1e-2, 200 epochs, milestones 100/150;
    # l2+cosd eps 4, lambda_l2 0.01, lambda_cos 0.1; Hessian lambda 1e-4.
    "cifar10-resnet18": TrainConfig(
        preset="cifar10-resnet18",
        dataset="cifar10",
        model="resnet18-cifar",
        optimizer="adamw",
        weight_decay=1e-2,
        epochs=200,
        milestones=(100, 150),
        lambda_l2=0.01,
        lambda_cos=0.1,
        lambda_hessian=1e-4,
    ),  # fmt: skip
    # scripts/imagenet_resnet.sh: AdamW, wd 1e-2, 90 epochs, milestones 40/60/80;
    # l2+cosd eps 4, lambda_l2 1.0, lambda_cos 0.01; Hessian lambda 1e-3 (the script
    # trains the Hessian model at batch 64: pass --batch-size 64 with --regularizer hessian).
    "imagenet100-resnet18": TrainConfig(
        preset="imagenet100-resnet18",
        dataset="imagenet100",
        model="resnet18",
        optimizer="adamw",
        weight_decay=1e-2,
        epochs=90,
        milestones=(40, 60, 80),
        lambda_l2=1.0,
        lambda_cos=0.01,
        lambda_hessian=1e-3,
        num_workers=8,
    ),  # fmt: skip
    # Ours: the offline toy on the 5,000 real MNIST digits, about a minute on one core.
    # eps 16/255 makes the noise visible at 28x28 (4/255 barely moves an MNIST gradient).
    # lr 3e-3, 8 epochs, decay after 6 (measured, test accuracy of `none`): the earlier lr
    # 1e-3 with 4 epochs reached 0.952 on toy seed 0; 3e-3 with 4 epochs 0.974 there but
    # 0.951-0.960 on toy seed 1; 8 epochs 0.971-0.974 on both (training seed 1235).
    "mnist-toy": TrainConfig(
        preset="mnist-toy",
        dataset="mnist",
        model="mnist-cnn",
        optimizer="adam",
        lr=3e-3,
        weight_decay=0.0,
        epochs=8,
        milestones=(6,),
        batch_size=64,
        eps=16.0,
        lambda_l2=0.01,
        lambda_cos=1.0,
        lambda_hessian=1e-3,
        num_workers=0,
    ),  # fmt: skip
}

#: The process count each preset was designed for: RobustAGA's scripts train on one GPU
#: (`--devices 1` in scripts/*.sh), and mnist-toy on one CPU process. Another count (torchrun)
#: says so in one line naming the global batch (`labshared.launch`).
PRESET_PROCESSES: dict[str, int] = {name: 1 for name in PRESETS}
#: The official training seed (`project/main.py`), used when --seed is not given.
TRAIN_SEED = 1234

#: (dataset, model) -> the preset used when --preset is not given.
DEFAULT_PRESETS: dict[tuple[str, str], str] = {
    ("cifar10", "lenet"): "cifar10-lenet",
    ("cifar10", "resnet18-cifar"): "cifar10-resnet18",
    ("imagenet100", "resnet18"): "imagenet100-resnet18",
    ("mnist", "mnist-cnn"): "mnist-toy",
}
DEFAULT_MODELS = {"cifar10": "lenet", "imagenet100": "resnet18", "mnist": "mnist-cnn"}


def default_preset(dataset: str | None, model: str | None) -> tuple[str, TrainConfig]:
    """The preset `robattr train` starts from when --preset is not given: the paper
    setting of --dataset/--model (mnist-toy when neither is given), else the dataclass
    defaults with that dataset and model. Returns (name, config)."""
    ds = dataset or "mnist"
    if ds not in DATASETS:
        raise unknown_name("--dataset", ds, DATASETS)
    mdl = model or DEFAULT_MODELS[ds]
    name = DEFAULT_PRESETS.get((ds, mdl))
    if name is None:
        return CUSTOM, TrainConfig(preset=CUSTOM, dataset=ds, model=mdl)
    return name, PRESETS[name]


def start_preset(params: Mapping[str, Any]) -> tuple[str, TrainConfig]:
    """`robattr train`'s base without --preset (`config_command(start=...)`): on --resume
    the run's own config (so a resumed run needs no flags, and a flag that changes a field
    shows up where `start_run`'s one resume rule refuses it unless it is a run-time knob),
    else `default_preset` of --dataset/--model."""
    if params.get("resume") and params.get("output_dir") is not None:
        saved = saved_config(params["output_dir"])
        return saved.preset, saved
    custom = _custom_run(params.get("config_file"))
    if custom is not None:  # --config of a `custom` run: its own config is the base
        return CUSTOM, custom
    return default_preset(params.get("dataset"), params.get("model"))


def _custom_run(path: str | Path | None) -> TrainConfig | None:
    """The config of a `--config` run header whose preset is `custom` (else None; the
    file's own errors are reported by `labshared.options.read_config_file`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("preset") == CUSTOM and "tool" in data:
        return config_from_dict(data.get("config", {}))
    return None


def resolve_config(
    preset: str | None,
    dataset: str | None,
    model: str | None,
    overrides: Mapping[str, Any],
    saved: TrainConfig | None = None,
) -> TrainConfig:
    """In code (the demo, tests): defaults < preset < overrides, then `validate_train`; the
    base as `robattr train` picks it.

    Args:
        preset: --preset, or None to start from `default_preset(dataset, model)`.
        dataset, model: --dataset/--model (None keeps the preset's).
        overrides: the other fields; None means "not passed".
        saved: on --resume, the run's own config (`saved_config`): it replaces the preset.
    """
    flags = {"dataset": dataset, "model": model, **overrides}
    if saved is not None:
        presets, flags = {saved.preset: saved}, {"preset": preset, **flags}
        preset = saved.preset
    elif preset is None:
        preset, base = default_preset(dataset, model)
        presets = {preset: base}
    else:
        presets = PRESETS
    return resolve(presets, preset, flags, validate=validate_train)


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The config a `robattr train` run folder was started with (its config.json)."""
    return config_from_dict(read_header(run_dir)["config"])


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from its JSON form (the "config" of a run's header)."""
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in data.items() if k in known}
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    return TrainConfig(**values)


# --------------------------------------------------------------------------- attack / eval
# The fields `robattr attack` and `robattr eval` share: one declaration each.
def _checkpoint() -> str:
    return opt("", "A `robattr train` run folder (its last checkpoint) or a checkpoint folder "
               "(required).", panel=MODEL_PANEL)  # fmt: skip


def _which() -> str:
    return opt("last", "Checkpoint of a run folder: last or best.", panel=MODEL_PANEL,
               choices=("last", "best"))  # fmt: skip


def _data_root() -> str | None:
    return opt(None, "Dataset location (default: the training run's; none needed for mnist).",
               panel=MODEL_PANEL)  # fmt: skip


def _method(default: str | None, when_none: str = "") -> str | None:
    return opt(
        default,
        "Attribution: grad, input-x-grad, integrated-gradients (true IG), path-averaged-grad "
        f"(the official 'intgrad', no (x - baseline) factor) or smoothgrad{when_none}.",
        panel=ATTR_PANEL, choices=ATTRIBUTIONS,
    )  # fmt: skip


def _num_examples() -> int | None:
    return opt(None, "Only the first N test images (quick runs). None: the whole test split, "
               "misclassified images included, as the official evaluation.",
               panel=MODEL_PANEL)  # fmt: skip


def _correct_only() -> bool:
    return opt(False, "Only test images the model classifies correctly (ART / Ghorbani "
               "protocol); with --num-examples, the first N of them.", panel=MODEL_PANEL,
               flag="--correct-only")  # fmt: skip


def _batch_size() -> int:
    return opt(50, "Images per batch.", panel=MODEL_PANEL)


def _k() -> int | None:
    return opt(None, "Top-k size (none: 100 per 32x32 pixels, at most 1000: 77 on 28x28, 1000 "
               "on 224x224).", panel=ATTR_PANEL)  # fmt: skip


def _ig_steps() -> int:
    return opt(50, "IG / path-averaged steps.", panel=ATTR_PANEL)


def _ig_rule() -> str:
    return opt("riemann_trapezoid", "IG quadrature: riemann_trapezoid, riemann_middle or "
               "gausslegendre.", panel=ATTR_PANEL, choices=INTEGRATION_RULES)  # fmt: skip


def _sg_samples() -> int:
    return opt(50, "SmoothGrad samples.", panel=ATTR_PANEL)


def _sg_noise() -> float:
    return opt(0.1, "SmoothGrad sigma / (max - min of the image).", panel=ATTR_PANEL)


@dataclass(frozen=True)
class AttackConfig:
    """One `robattr attack` run (saved in config.json)."""

    checkpoint: str = _checkpoint()
    which: str = _which()
    data_root: str | None = _data_root()
    attack: str = opt("frame", "frame (official targeted manipulation), topk (Ghorbani) or "
                      "random (random perturbation, RPS).", panel=ATTACK_PANEL,
                      choices=ATTACKS)  # fmt: skip
    method: str = _method("grad")
    eps: float | None = opt(None, "L-inf budget in pixels/255, converted with the per-channel "
                            "std (none: frame 4, topk 8, random 4).",
                            panel=ATTACK_PANEL)  # fmt: skip
    n_iter: int = opt(100, "Attack iterations (official 100).", panel=ATTACK_PANEL)
    gamma: float = opt(0.5, "Frame attack: weight of the map loss (official 0.5).",
                       panel=ATTACK_PANEL)  # fmt: skip
    optimizer: str = opt("adam", "Frame attack: adam (official code, lr 4 eps/iters) or pgd "
                         "(sign steps).", panel=ATTACK_PANEL,
                         choices=ATTACK_OPTIMIZERS)  # fmt: skip
    step_size: float | None = opt(None, "Sign-step size in pixels/255 (pgd, topk; none: 2.5 "
                                  "eps / n-iter).", panel=ATTACK_PANEL)  # fmt: skip
    k: int | None = _k()
    n_draws: int = opt(10, "Random attack: draws (official 10).", panel=ATTACK_PANEL)
    surrogate_beta: float = opt(20.0, "Softplus beta of the copy attacked for ReLU models "
                                "(official 20).", panel=ATTACK_PANEL)  # fmt: skip
    num_examples: int | None = _num_examples()
    correct_only: bool = _correct_only()
    batch_size: int = _batch_size()
    ig_steps: int = _ig_steps()
    ig_rule: str = _ig_rule()
    sg_samples: int = _sg_samples()
    sg_noise: float = _sg_noise()

    @property
    def budget(self) -> float:
        return self.eps if self.eps is not None else DEFAULT_EPS[self.attack]


@dataclass(frozen=True)
class EvalConfig:
    """One `robattr eval` run (saved in config.json)."""

    checkpoint: str = _checkpoint()
    which: str = _which()
    data_root: str | None = _data_root()
    attacked: str | None = opt(None, "A `robattr attack` run folder: also score its attacked "
                               "maps (and Adv-Insertion).", panel=ATTACK_PANEL)  # fmt: skip
    method: str | None = _method(None, " (none: the attack run's, else grad)")
    num_examples: int | None = _num_examples()
    correct_only: bool = _correct_only()
    batch_size: int = _batch_size()
    rps_eps: tuple[float, ...] = opt(
        (4.0,), "RPS noise levels in pixels/255, comma-separated, e.g. 4,8,16 (the paper's "
        "set); the official --rand_eps is 4; 0 = off.", panel=ATTACK_PANEL, cli_type=str,
        parse=parse_eps_list, metavar="EPS,...",
    )  # fmt: skip
    n_draws: int = opt(10, "RPS draws per level (official 10).", panel=ATTACK_PANEL)
    n_ratios: int = opt(20, "Insertion ratios (official 20; 0 = off).", panel=ATTACK_PANEL)
    k: int | None = _k()
    ig_steps: int = _ig_steps()
    ig_rule: str = _ig_rule()
    sg_samples: int = _sg_samples()
    sg_noise: float = _sg_noise()
