"""The `robattr` command line: wiring only; each command's work lives in its own module.

Every command resolves its config (`labshared.config.resolve`: defaults < preset < the
flags passed; each flag is the config field of the same name), then starts its run through
`labshared.launch.start_run` (checks first, then the run folder and its one config header)
and hands the run to its workflow. The command bodies import the workflows when they run:
torch and the models are heavy imports that `--help` and `--version` do not need.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import (
    BootstrapSeedOpt,
    DeterministicOpt,
    DeviceOpt,
    InitFromOpt,
    IntersectOpt,
    JsonOpt,
    MarkdownOpt,
    OutputDirOpt,
    OverwriteOpt,
    PrecisionOpt,
    PresetOpt,
    ReportToOpt,
    ResamplesOpt,
    ResumeOpt,
    SeedOpt,
    make_app,
    run_app,
)
from robattr_cli import __version__

app = make_app(
    "robattr",
    "Robust feature attribution by local gradient alignment: train, attack attribution maps, "
    "and measure their robustness.",
    __version__,
)


# --------------------------------------------------------------------------- train
# Options map one-to-one onto robattr_cli.config.TrainConfig fields; None keeps the preset.
_MODEL = "Model and data"
_REG = "Regulariser"
_OPT = "Optimisation"


@app.command("train")
def train(
    preset: PresetOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="cifar10, imagenet100 or mnist (offline MNIST-5k).", rich_help_panel=_MODEL
        ),
    ] = None,
    data_root: Annotated[
        str | None,
        typer.Option(
            help="CIFAR-10: folder holding cifar-10-batches-py, a save_to_disk folder, or "
            "hf:<dataset id>; ImageNet-100: folder with train/ and val/ (or test/).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    toy_seed: Annotated[
        int | None,
        typer.Option(
            help="MNIST-5k toy only: seed of its 4,000 / 1,000 train/test split (default 0).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="lenet, resnet18-cifar, resnet18 (ImageNet-100) or mnist-cnn.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    activation: Annotated[
        str | None,
        typer.Option(
            help="softplus (paper) or relu: replaces every ReLU module.", rich_help_panel=_MODEL
        ),
    ] = None,
    beta: Annotated[
        float | None, typer.Option(help="Softplus beta (paper 3).", rich_help_panel=_MODEL)
    ] = None,
    regularizer: Annotated[
        str | None,
        typer.Option(
            help="l2cos (paper), l2 or cos (ablations), hessian (baseline) or none.",
            rich_help_panel=_REG,
        ),
    ] = None,
    eps: Annotated[
        float | None,
        typer.Option(
            help="Noise radius in pixel units of 1/255 (paper 4 = 4/255).", rich_help_panel=_REG
        ),
    ] = None,
    lambda_l2: Annotated[
        float | None,
        typer.Option(help="Weight of mean ||g(x) - g(x+delta)||^2.", rich_help_panel=_REG),
    ] = None,
    lambda_cos: Annotated[
        float | None,
        typer.Option(help="Weight of the cosine distance (1 - cos)/2.", rich_help_panel=_REG),
    ] = None,
    lambda_hessian: Annotated[
        float | None,
        typer.Option(help="Weight of the Hutchinson ||H v||^2 term.", rich_help_panel=_REG),
    ] = None,
    perturb: Annotated[
        str | None,
        typer.Option(
            help="Noise law: uniform in the eps box (paper) or gaussian.", rich_help_panel=_REG
        ),
    ] = None,
    detach_clean_grad: Annotated[
        bool | None,
        typer.Option(
            "--detach-clean-grad/--no-detach-clean-grad",
            help="Treat g(x) as a constant target (official default).",
            rich_help_panel=_REG,
        ),
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="adam, adamw or sgd.", rich_help_panel=_OPT)
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.", rich_help_panel=_OPT)] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="Weight decay.", rich_help_panel=_OPT)
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs.", rich_help_panel=_OPT)
    ] = None,
    milestones: Annotated[
        str | None,
        typer.Option(
            help="Epochs where the LR is multiplied by 0.1, e.g. '100,150' ('' for none).",
            rich_help_panel=_OPT,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Training batch per process.", rich_help_panel=_OPT)
    ] = None,
    eval_batch_size: Annotated[
        int | None, typer.Option(help="Validation batch (official 100).", rich_help_panel=_OPT)
    ] = None,
    grad_clip: Annotated[
        float | None,
        typer.Option(
            help="Global gradient-norm clip (official 0.5; 0 = off).", rich_help_panel=_OPT
        ),
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option(help="DataLoader worker processes.", rich_help_panel=_OPT)
    ] = None,
    limit_train: Annotated[
        int | None,
        typer.Option(
            help="Train on a fixed random subset of N images (smoke runs).", rich_help_panel=_OPT
        ),
    ] = None,
    limit_eval: Annotated[
        int | None,
        typer.Option(help="Validate on a fixed random subset of N images.", rich_help_panel=_OPT),
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(
            help="Also checkpoint every N steps (epoch ends always save).", rich_help_panel=_OPT
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Stop after N optimiser steps in total, with a checkpoint (part of the run: "
            "a resumed run keeps it).",
            rich_help_panel=_OPT,
        ),
    ] = None,
    log_every: Annotated[
        int | None,
        typer.Option(
            help="Log every N steps to metrics.jsonl (and --report-to); default 10.",
            rich_help_panel=_OPT,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit.")
    ] = False,
    check_data: Annotated[
        bool,
        typer.Option(
            "--check-data",
            help="Check the dataset under --data-root (index, image counts per split and "
            "class, one decoded image per class) and exit; names the first missing file.",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 1234,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    init_from: InitFromOpt = None,
    report_to: ReportToOpt = None,
) -> None:
    """Train a classifier with an attribution-robustness regulariser (paper: l2cos).

    Presets: cifar10-lenet, cifar10-resnet18, imagenet100-resnet18 (paper), mnist-toy (CPU).
    Without --preset: the preset of --dataset/--model (mnist-toy when neither is given).
    --resume continues -o from its own config.json; flags may change only run-time knobs.
    """
    import dataclasses
    import json

    from labshared import distributed
    from labshared.launch import start_run
    from labshared.training import parse_report_to
    from robattr_cli import __version__
    from robattr_cli.config import (
        PRESET_PROCESSES,
        check_data_root,
        parse_milestones,
        resolve_config,
        saved_config,
    )
    from robattr_cli.datacheck import check_data as run_check
    from robattr_cli.train import run

    overrides = {
        "data_root": data_root, "toy_seed": toy_seed, "activation": activation, "beta": beta,
        "regularizer": regularizer, "eps": eps, "lambda_l2": lambda_l2,
        "lambda_cos": lambda_cos, "lambda_hessian": lambda_hessian, "perturb": perturb,
        "detach_clean_grad": detach_clean_grad, "optimizer": optimizer, "lr": lr,
        "weight_decay": weight_decay, "epochs": epochs,
        "milestones": parse_milestones(milestones), "batch_size": batch_size,
        "eval_batch_size": eval_batch_size, "grad_clip": grad_clip, "num_workers": num_workers,
        "limit_train": limit_train, "limit_eval": limit_eval, "save_every": save_every,
        "max_steps": max_steps, "log_every": log_every,
    }  # fmt: skip
    saved = saved_config(output_dir) if resume and output_dir is not None else None
    cfg = resolve_config(preset, dataset, model, overrides, saved)
    if check_data:
        typer.echo(json.dumps(run_check(cfg), indent=2))
        return
    if dry_run:
        typer.echo(json.dumps(dataclasses.asdict(cfg), indent=2))
        return

    def validate() -> None:  # checked before the run folder exists
        check_data_root(cfg)
        parse_report_to(report_to)

    started = start_run(
        "robattr", "train", cfg, version=__version__, preset=cfg.preset, output_dir=output_dir,
        resume=resume, overwrite=overwrite, device=device, precision=precision, seed=seed,
        deterministic=deterministic, validate=validate, init_from=init_from,
        batch_size=cfg.batch_size, preset_processes=PRESET_PROCESSES.get(cfg.preset),
    )  # fmt: skip
    try:
        summary = run(
            cfg, started.runtime, started.dir, resume=started.resumed,
            init_from=started.init_from, report_to=parse_report_to(report_to),
        )  # fmt: skip
    finally:
        distributed.cleanup()
    summary = {k: v for k, v in summary.items() if k != "history"}
    typer.echo(json.dumps({"run_dir": str(started.dir), **summary}, indent=2))


# --------------------------------------------------------------------------- attack / eval
# Options map one-to-one onto AttackConfig / EvalConfig fields; None keeps the default.
_ATTR = "Attribution"
CheckpointOpt = Annotated[
    str,
    typer.Option(
        "--checkpoint",
        help="A `robattr train` run folder (its last checkpoint) or a checkpoint folder.",
        rich_help_panel=_MODEL,
    ),
]
WhichOpt = Annotated[
    str, typer.Option(help="Checkpoint of a run folder: last or best.", rich_help_panel=_MODEL)
]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset location (default: the training run's; none needed for mnist).",
        rich_help_panel=_MODEL,
    ),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(
        help="Attribution: grad, input-x-grad, integrated-gradients (true IG), "
        "path-averaged-grad (the official 'intgrad', no (x - baseline) factor) or smoothgrad.",
        rich_help_panel=_ATTR,
    ),
]
NumExamplesOpt = Annotated[
    int | None,
    typer.Option(
        help="Only the first N test images (quick runs). Default: the whole test split, "
        "misclassified images included, as the official evaluation.",
        rich_help_panel=_MODEL,
    ),
]
CorrectOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--correct-only",
        help="Only test images the model classifies correctly (ART / Ghorbani protocol); "
        "with --num-examples, the first N of them.",
        rich_help_panel=_MODEL,
    ),
]
BatchOpt = Annotated[
    int | None, typer.Option(help="Images per batch (default 50).", rich_help_panel=_MODEL)
]
KOpt = Annotated[
    int | None,
    typer.Option(
        "--k",
        help="Top-k size (default 100 per 32x32 pixels, at most 1000: 77 on 28x28, 1000 on "
        "224x224).",
        rich_help_panel=_ATTR,
    ),
]
IgStepsOpt = Annotated[
    int | None, typer.Option(help="IG / path-averaged steps (default 50).", rich_help_panel=_ATTR)
]
IgRuleOpt = Annotated[
    str | None,
    typer.Option(
        help="IG quadrature: riemann_trapezoid (default), riemann_middle or gausslegendre.",
        rich_help_panel=_ATTR,
    ),
]
SgSamplesOpt = Annotated[
    int | None, typer.Option(help="SmoothGrad samples (default 50).", rich_help_panel=_ATTR)
]
SgNoiseOpt = Annotated[
    float | None,
    typer.Option(
        help="SmoothGrad sigma / (max - min of the image) (default 0.1).", rich_help_panel=_ATTR
    ),
]
_ATK = "Attack"


@app.command("attack")
def attack(
    checkpoint: CheckpointOpt,
    attack: Annotated[
        str | None,
        typer.Option(
            help="frame (official targeted manipulation, default), topk (Ghorbani) or "
            "random (random perturbation, RPS).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    eps: Annotated[
        float | None,
        typer.Option(
            help="L-inf budget in pixels/255, converted with the per-channel std "
            "(default: frame 4, topk 8, random 4).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    n_iter: Annotated[
        int | None, typer.Option(help="Attack iterations (default 100).", rich_help_panel=_ATK)
    ] = None,
    gamma: Annotated[
        float | None,
        typer.Option(
            help="Frame attack: weight of the map loss (default 0.5).", rich_help_panel=_ATK
        ),
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="Frame attack: adam (official code, lr 4 eps/iters) or pgd (sign steps).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    step_size: Annotated[
        float | None,
        typer.Option(
            help="Sign-step size in pixels/255 (pgd, topk; default 2.5 eps / n-iter).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    n_draws: Annotated[
        int | None, typer.Option(help="Random attack: draws (default 10).", rich_help_panel=_ATK)
    ] = None,
    surrogate_beta: Annotated[
        float | None,
        typer.Option(
            help="Softplus beta of the copy attacked for ReLU models (default 20).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    method: MethodOpt = None,
    k: KOpt = None,
    ig_steps: IgStepsOpt = None,
    ig_rule: IgRuleOpt = None,
    sg_samples: SgSamplesOpt = None,
    sg_noise: SgNoiseOpt = None,
    which: WhichOpt = "last",
    data_root: DataRootOpt = None,
    num_examples: NumExamplesOpt = None,
    correct_only: CorrectOnlyOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Attack the attribution maps of a trained model; save attacked inputs, maps, metrics."""
    import json

    from labshared.launch import start_run
    from robattr_cli import __version__
    from robattr_cli.attack import resolve_config, run_attack
    from robattr_cli.victim import check_victim

    cfg = resolve_config(checkpoint, {
        "which": which, "data_root": data_root, "num_examples": num_examples,
        "correct_only": correct_only, "attack": attack, "method": method, "eps": eps,
        "n_iter": n_iter, "gamma": gamma, "optimizer": optimizer, "step_size": step_size,
        "k": k, "n_draws": n_draws, "surrogate_beta": surrogate_beta, "batch_size": batch_size,
        "ig_steps": ig_steps, "ig_rule": ig_rule, "sg_samples": sg_samples, "sg_noise": sg_noise,
    })  # fmt: skip
    started = start_run(
        "robattr", "attack", cfg, version=__version__, output_dir=output_dir,
        overwrite=overwrite, device=device, precision=precision, seed=seed,
        deterministic=deterministic, resumable=False,
        validate=lambda: check_victim(cfg.checkpoint, cfg.which, cfg.data_root),
    )  # fmt: skip
    metrics = run_attack(cfg, started.runtime, started.dir)
    typer.echo(json.dumps({"run_dir": str(started.dir), **metrics}, indent=2))


@app.command("eval")
def evaluate(
    checkpoint: CheckpointOpt,
    attacked: Annotated[
        str | None,
        typer.Option(
            help="A `robattr attack` run folder: also score its attacked maps (and Adv-Insertion).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    rps_eps: Annotated[
        str | None,
        typer.Option(
            help="RPS noise levels in pixels/255, comma-separated, e.g. 4,8,16 (the paper's "
            "set). Default 4, the official --rand_eps; 0 = off.",
            rich_help_panel=_ATK,
        ),
    ] = None,
    n_draws: Annotated[
        int | None, typer.Option(help="RPS draws (default 10).", rich_help_panel=_ATK)
    ] = None,
    n_ratios: Annotated[
        int | None,
        typer.Option(
            help="Insertion ratios (default 20 as the official code; 0 = off).",
            rich_help_panel=_ATK,
        ),
    ] = None,
    method: MethodOpt = None,
    k: KOpt = None,
    ig_steps: IgStepsOpt = None,
    ig_rule: IgRuleOpt = None,
    sg_samples: SgSamplesOpt = None,
    sg_noise: SgNoiseOpt = None,
    which: WhichOpt = "last",
    data_root: DataRootOpt = None,
    num_examples: NumExamplesOpt = None,
    correct_only: CorrectOnlyOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Clean accuracy, RPS, attack similarity and insertion/AOPC; JSON, table and figure."""
    from labshared.launch import start_run
    from robattr_cli import __version__
    from robattr_cli.evaluate import (
        check_inputs,
        format_table,
        parse_eps_list,
        resolve_config,
        run_eval,
    )

    cfg = resolve_config(checkpoint, {
        "which": which, "data_root": data_root, "attacked": attacked,
        "num_examples": num_examples, "correct_only": correct_only, "method": method,
        "batch_size": batch_size, "rps_eps": parse_eps_list(rps_eps), "n_draws": n_draws,
        "n_ratios": n_ratios, "k": k, "ig_steps": ig_steps, "ig_rule": ig_rule,
        "sg_samples": sg_samples, "sg_noise": sg_noise,
    })  # fmt: skip
    started = start_run(
        "robattr", "eval", cfg, version=__version__, output_dir=output_dir,
        overwrite=overwrite, device=device, precision=precision, seed=seed,
        deterministic=deterministic, resumable=False, validate=lambda: check_inputs(cfg),
    )  # fmt: skip
    metrics = run_eval(cfg, started.runtime, started.dir)
    typer.echo(format_table({"run_dir": str(started.dir), **metrics}))


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="`robattr eval` run folders (two or more).")],
    name: Annotated[
        list[str] | None, typer.Option(help="Label of each run, in order (repeat).")
    ] = None,
    intersect: IntersectOpt = False,
    seed: BootstrapSeedOpt = 0,
    resamples: ResamplesOpt = 10_000,
    markdown: MarkdownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare `robattr eval` runs image by image: every shared measure with its 95 %
    interval, and each run's paired difference to the first with its interval and p-value."""
    from labshared.compare import format_comparison
    from labshared.stats import BootstrapSpec
    from robattr_cli.compare import compare_runs

    spec = BootstrapSpec(n_resamples=resamples, seed=seed)
    result, heads = compare_runs(runs, name, spec, intersect)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(format_comparison(result, heads, markdown=markdown))


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
