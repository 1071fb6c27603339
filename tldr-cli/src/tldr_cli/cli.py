"""The `tldr` command line: wiring only; each command's work lives in its own module."""

from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import (
    DeterministicOpt,
    DeviceOpt,
    NoCacheOpt,
    OutputDirOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuickGeluOpt,
    ResumeOpt,
    SeedOpt,
    make_app,
    on_off,
    run_app,
)
from tldr_cli import __version__

app = make_app(
    "tldr",
    "TLDR: debias an image classifier by retraining its last layer on LLM-generated words projected from CLIP's text space.",
    __version__,
)


@app.command()
def generate(
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            "-p",
            help="Dataset whose lists to build: waterbirds, celeba, spuco-animals or toy "
            "(classes, spurious values, anchors, LLM descriptions).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="LLM name as the server knows it (gpt-4o-mini, a vLLM/Ollama model, ...).",
            rich_help_panel="LLM",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or "
            "http://localhost:11434/v1 (Ollama); default api.openai.com.",
            rich_help_panel="LLM",
        ),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding the API key (default OPENAI_API_KEY). "
            "The key is never written anywhere.",
            rich_help_panel="LLM",
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Sampling temperature (default 1.0).", rich_help_panel="LLM"),
    ] = None,
    target: Annotated[
        int | None,
        typer.Option(help="Words wanted per list (default 200, as in the official lists)."),
    ] = None,
    per_call: Annotated[
        int | None,
        typer.Option(help="Words asked for per request (default 50).", rich_help_panel="LLM"),
    ] = None,
    max_calls: Annotated[
        int | None,
        typer.Option(
            help="Requests per list before giving up on --target (default 0: "
            "3 x ceil(target/per-call) + 2).",
            rich_help_panel="LLM",
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Stop a list after this many calls in a row brought no new word "
            "(or no readable reply); default 3.",
            rich_help_panel="LLM",
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            help="Reply token limit per request (default 4096; 0: not sent, for models that "
            "reject max_tokens).",
            rich_help_panel="LLM",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds per HTTP request (default 120).", rich_help_panel="Retries"),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            help="HTTP attempts per request on 429/5xx/timeouts/dropped connections/"
            "malformed bodies (default 6).",
            rich_help_panel="Retries",
        ),
    ] = None,
    retry_base_delay: Annotated[
        float | None,
        typer.Option(
            help="Seconds before the first retry, doubled each retry (default 1); a "
            "server's Retry-After wins.",
            rich_help_panel="Retries",
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="JSON/TOML file replacing the prompts (see --dry-run).",
            rich_help_panel="LLM",
        ),
    ] = None,
    from_file: Annotated[
        list[str] | None,
        typer.Option(
            help="Import lists instead of asking the LLM: [LIST=]PATH of a word-list "
            "JSON, a {list: \\[words]} JSON or a one-word-per-line text file; or "
            "builtin:toy. Repeatable; lists not imported are generated with --model."
        ),
    ] = None,
    offline_toy: Annotated[
        bool,
        typer.Option(
            "--offline-toy",
            help="Use the shipped toy word lists (= --preset toy --from-file builtin:toy).",
        ),
    ] = False,
    show_prompts: Annotated[
        bool, typer.Option("--show-prompts", help="Print each prompt as it is sent (stderr).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the resolved config and the first prompt of every list; send nothing.",
        ),
    ] = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Do not read or write the shared LLM reply cache "
            "(the run folder's replies.jsonl is always kept for --resume).",
        ),
    ] = False,
) -> None:
    """Build the class and spurious word lists with an LLM (or import them) -> wordlists.json."""
    import json

    from labshared.runs import create_run_dir, write_config, write_metrics
    from tldr_cli.generate import WORDLISTS_FILE, GenerateConfig, preview_prompts, run

    files = list(from_file or [])
    if offline_toy:
        preset = preset or "toy"
        files.append("builtin:toy")
    given = {
        "preset": preset,
        "model": model,
        "base_url": base_url,
        "key_env_var": api_key_env,
        "temperature": temperature,
        "target": target,
        "per_call": per_call,
        "max_calls": max_calls,
        "patience": patience,
        "max_tokens": max_tokens,
        "timeout": timeout,
        "max_attempts": max_attempts,
        "retry_base_delay": retry_base_delay,
        "prompts_file": prompts,
    }
    cfg = GenerateConfig(
        **{k: v for k, v in given.items() if v is not None},
        from_files=tuple(files),
        shared_cache=not no_cache,
        show_prompts=show_prompts,
    )
    if dry_run:
        typer.echo(json.dumps({"config": cfg.public(), "requests": preview_prompts(cfg)}, indent=2))
        return
    run_dir = create_run_dir("tldr", "generate", output_dir, resume=resume, overwrite=overwrite)
    write_config(run_dir, cfg.public())
    wordlists, metrics = run(cfg, run_dir)
    write_metrics(run_dir, metrics)
    for kind, lists in (("class", wordlists.classes), ("spurious", wordlists.spurious)):
        for name, words in lists.items():
            source = metrics["lists"][f"{'classes' if kind == 'class' else 'spurious'}.{name}"][
                "source"
            ]
            typer.echo(f"{kind:9s} {name:20s} {len(words):5d} words  ({source})")
    typer.echo(str(run_dir / WORDLISTS_FILE))


# --------------------------------------------------------------------------- filter / retrain / erm
# Options shared by `filter`, `retrain` and `erm`. Each defaults to None: keep the preset.
PresetOpt = Annotated[
    str,
    typer.Option(
        "--preset", "-p", help="Run preset: toy (offline), waterbirds, celeba or spuco-animals."
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset: toy, waterbirds, celeba, spuco-animals, or hf (a Hugging Face copy).",
        rich_help_panel="Data",
    ),
]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        help="Dataset folder in its official layout (for hf: hub id or save_to_disk folder).",
        rich_help_panel="Data",
    ),
]
ArchOpt = Annotated[
    str | None,
    typer.Option(
        help="Classifier architecture for ERM: resnet50 or toy-cnn.", rich_help_panel="Classifier"
    ),
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        help="ERM initialisation: torchvision enum (IMAGENET1K_V1, downloads once), a local .pth/.safetensors "
        "ResNet-50 state dict, toy-digits (toy CNN), or none.",
        rich_help_panel="Classifier",
    ),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        help="ERM recipe: paper-repo (TLDR script.sh), dfr-waterbirds, dfr-celeba or toy.",
        rich_help_panel="Classifier",
    ),
]
ClassifierOpt = Annotated[
    str | None,
    typer.Option(
        help="Trained classifier: a `tldr erm` run folder, a checkpoint folder, or a torchvision ResNet-50 "
        "state dict. Without it ERM is trained with the preset's recipe (cached).",
        rich_help_panel="Classifier",
    ),
]
ClipModelOpt = Annotated[
    str | None,
    typer.Option(help="open_clip model name (ViT-B-32), or tiny-clip-toy.", rich_help_panel="CLIP"),
]
ClipPretrainedOpt = Annotated[
    str | None,
    typer.Option(
        help="open_clip pretrained tag (openai) or a local weights file.", rich_help_panel="CLIP"
    ),
]
ClipInputOpt = Annotated[
    str | None,
    typer.Option(
        help="What CLIP embeds for the projector: clip (its own preprocessing) or classifier (the official "
        "code's ImageNet-normalised tensors).",
        rich_help_panel="CLIP",
    ),
]
GapPairsOpt = Annotated[
    str | None,
    typer.Option(
        help="Image-caption pairs for the modality gap: a COCO captions folder, a JSONL file, or toy.",
        rich_help_panel="Projector",
    ),
]
NGapOpt = Annotated[
    int | None,
    typer.Option(help="Pairs used for the mean gap (1000).", rich_help_panel="Projector"),
]
LambdaOpt = Annotated[
    float | None,
    typer.Option(
        "--lambda",
        help="Ridge penalty of the projector (paper presets 50; toy: see the preset).",
        rich_help_panel="Projector",
    ),
]
PreprocessEmbedOpt = Annotated[
    str | None,
    typer.Option(
        help="CLIP embeddings into the projector: none (raw, the paper's script) or "
        "clip_normalize (the official option: L2-normalised images, gap and words).",
        rich_help_panel="Projector",
    ),
]
ToyTrainOpt = Annotated[
    int | None, typer.Option(help="Toy world: training images.", rich_help_panel="Data")
]
ToySeedOpt = Annotated[
    int | None,
    typer.Option(
        help="Toy world: data seed of the spurious split (which digits, colours and crops); "
        "separate from --seed, which drives training.",
        rich_help_panel="Data",
    ),
]
TemplatesOpt = Annotated[
    str | None,
    typer.Option(
        help="Caption templates the words are embedded in: imagenet (the 80 OpenAI ImageNet "
        "templates, paper presets) or toy (the tiny CLIP's caption forms, toy preset).",
        rich_help_panel="Head",
    ),
]
ToyValOpt = Annotated[
    int | None,
    typer.Option(
        help="Toy world: validation images (DFR's group-labelled set).", rich_help_panel="Data"
    ),
]
ToyTestOpt = Annotated[
    int | None, typer.Option(help="Toy world: test images.", rich_help_panel="Data")
]
FeatBatchOpt = Annotated[
    int | None,
    typer.Option(help="Batch size of frozen-feature extraction.", rich_help_panel="Runtime"),
]
WorkersOpt = Annotated[
    int | None, typer.Option(help="DataLoader worker processes.", rich_help_panel="Runtime")
]
FeaturePrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="Autocast of the frozen classifier / CLIP image forward passes: fp32 (default, as "
        "the official code), bf16, fp16 (CUDA) or runtime (follow --precision). Part of the "
        "feature cache keys.",
        rich_help_panel="Runtime",
    ),
]


def _resolve(preset: str, **overrides):
    from tldr_cli.config import apply_overrides, get_preset

    return apply_overrides(get_preset(preset), **overrides)


def _start(
    command: str,
    cfg,
    output_dir,
    overwrite: bool,
    resume: bool,
    device: str,
    precision: str,
    seed: int,
    deterministic: bool,
):
    from labshared.console import log
    from labshared.device import setup_runtime
    from labshared.runs import create_run_dir, write_config

    run_dir = create_run_dir("tldr", command, output_dir, resume=resume, overwrite=overwrite)
    runtime = setup_runtime(device, precision, seed, deterministic)
    write_config(run_dir, cfg, runtime=runtime.describe(), tool="tldr", version=__version__)
    log(
        f"tldr {command} {__version__}: preset {cfg.name}, {runtime.describe()}, run folder {run_dir}"
    )
    return run_dir, runtime


@app.command("filter")
def filter_words(
    words: Annotated[Path, typer.Option(help="Word-list JSON (from `tldr generate`).")],
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    classifier: ClassifierOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    erm_recipe: RecipeOpt = None,
    clip_model: ClipModelOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
    quick_gelu: QuickGeluOpt = None,
    clip_input: ClipInputOpt = None,
    gap_pairs: GapPairsOpt = None,
    n_gap_pairs: NGapOpt = None,
    lam: LambdaOpt = None,
    preprocess_embed: PreprocessEmbedOpt = None,
    toy_n_train: ToyTrainOpt = None,
    toy_seed: ToySeedOpt = None,
    feature_batch_size: FeatBatchOpt = None,
    num_workers: WorkersOpt = None,
    feature_precision: FeaturePrecisionOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Stage 1 (CLIP anchor) and stage 2 (ERM head on projected words) word filter -> wordlists.json."""
    from tldr_cli.filter import run_filter

    cfg = _resolve(
        preset,
        dataset=dataset,
        data_root=data_root,
        arch=arch,
        backbone_weights=backbone_weights,
        erm_recipe=erm_recipe,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        clip_quick_gelu=on_off(quick_gelu),
        clip_input=clip_input,
        gap_pairs=gap_pairs,
        n_gap_pairs=n_gap_pairs,
        lam=lam,
        preprocess_embed=preprocess_embed,
        toy_n_train=toy_n_train,
        toy_seed=toy_seed,
        feature_batch_size=feature_batch_size,
        num_workers=num_workers,
        feature_precision=feature_precision,
    )
    run_dir, runtime = _start(
        "filter", cfg, output_dir, overwrite, False, device, precision, seed, deterministic
    )
    out, summary, _ = run_filter(
        cfg, runtime, run_dir, words=words, classifier=classifier, use_cache=not no_cache
    )
    for kind in ("classes", "spurious"):
        for name, n in summary["before"][kind].items():
            typer.echo(f"{kind:9s} {name:20s} {n:5d} -> {summary['after'][kind][name]:5d} words")
    typer.echo(
        f"removed: {summary['removed_stage1']} by the CLIP anchor filter, "
        f"{summary['removed_stage2']} by the classifier filter (filter_report.json)"
    )
    typer.echo(str(out))


@app.command()
def retrain(
    words: Annotated[
        Path | None,
        typer.Option(help="Word-list JSON (the output of `tldr filter`); needed for tldr."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(help="tldr (text, no group labels), dfr (group-labelled val images) or both."),
    ] = "both",
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    classifier: ClassifierOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    erm_recipe: RecipeOpt = None,
    clip_model: ClipModelOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
    quick_gelu: QuickGeluOpt = None,
    clip_input: ClipInputOpt = None,
    gap_pairs: GapPairsOpt = None,
    n_gap_pairs: NGapOpt = None,
    lam: LambdaOpt = None,
    preprocess_embed: PreprocessEmbedOpt = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs of the new head (paper presets 1; toy 200).", rich_help_panel="Head"
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="AdamW learning rate of the new head (paper presets 1e-4; toy 3e-2).",
            rich_help_panel="Head",
        ),
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="AdamW weight decay (1e-4).", rich_help_panel="Head")
    ] = None,
    head_batch_size: Annotated[
        int | None, typer.Option(help="Text pairs per batch (128).", rich_help_panel="Head")
    ] = None,
    template_draw: Annotated[
        str | None,
        typer.Option(
            help="Template draw: all (80 templates) or official (randint(0, 79), never the 80th).",
            rich_help_panel="Head",
        ),
    ] = None,
    templates: TemplatesOpt = None,
    dfr_retrains: Annotated[
        int | None, typer.Option(help="DFR fits averaged (20).", rich_help_panel="DFR")
    ] = None,
    toy_n_train: ToyTrainOpt = None,
    toy_seed: ToySeedOpt = None,
    toy_n_val: ToyValOpt = None,
    toy_n_test: ToyTestOpt = None,
    feature_batch_size: FeatBatchOpt = None,
    num_workers: WorkersOpt = None,
    feature_precision: FeaturePrecisionOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Retrain the last layer on projected text pairs (TLDR) and/or DFR; table of ERM vs TLDR vs DFR."""
    from labshared.errors import ConfigError
    from tldr_cli.retrain import run_retrain

    if method not in ("tldr", "dfr", "both"):
        raise ConfigError(f"--method {method!r}: expected tldr, dfr or both")
    cfg = _resolve(
        preset,
        dataset=dataset,
        data_root=data_root,
        arch=arch,
        backbone_weights=backbone_weights,
        erm_recipe=erm_recipe,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        clip_quick_gelu=on_off(quick_gelu),
        clip_input=clip_input,
        gap_pairs=gap_pairs,
        n_gap_pairs=n_gap_pairs,
        lam=lam,
        preprocess_embed=preprocess_embed,
        head_epochs=epochs,
        head_lr=lr,
        head_weight_decay=weight_decay,
        head_batch_size=head_batch_size,
        template_draw=template_draw,
        templates=templates,
        dfr_retrains=dfr_retrains,
        toy_n_train=toy_n_train,
        toy_seed=toy_seed,
        toy_n_val=toy_n_val,
        toy_n_test=toy_n_test,
        feature_batch_size=feature_batch_size,
        num_workers=num_workers,
        feature_precision=feature_precision,
    )
    run_dir, runtime = _start(
        "retrain", cfg, output_dir, overwrite, False, device, precision, seed, deterministic
    )
    _, table = run_retrain(
        cfg,
        runtime,
        run_dir,
        words=words,
        classifier=classifier,
        method=method,
        use_cache=not no_cache,
    )
    typer.echo(table)
    typer.echo(str(run_dir / "metrics.json"))


@app.command()
def erm(
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    recipe: RecipeOpt = None,
    toy_n_train: ToyTrainOpt = None,
    toy_seed: ToySeedOpt = None,
    toy_n_test: ToyTestOpt = None,
    feature_batch_size: FeatBatchOpt = None,
    num_workers: WorkersOpt = None,
    feature_precision: FeaturePrecisionOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Train the ERM classifier (paper-repo or DFR recipe) and report its group accuracies."""
    from tldr_cli.erm import run_erm

    cfg = _resolve(
        preset,
        dataset=dataset,
        data_root=data_root,
        arch=arch,
        backbone_weights=backbone_weights,
        erm_recipe=recipe,
        toy_n_train=toy_n_train,
        toy_seed=toy_seed,
        toy_n_test=toy_n_test,
        feature_batch_size=feature_batch_size,
        num_workers=num_workers,
        feature_precision=feature_precision,
    )
    run_dir, runtime = _start(
        "erm", cfg, output_dir, overwrite, resume, device, precision, seed, deterministic
    )
    m = run_erm(cfg, runtime, run_dir, resume=resume, use_cache=not no_cache)
    typer.echo(
        f"ERM ({cfg.recipe.name}): worst-group {100 * m['worst_group_acc']:.1f}%  "
        f"average {100 * m['average_acc']:.1f}%  class-balanced {100 * m['class_balanced_acc']:.1f}%"
    )
    typer.echo(str(run_dir / "checkpoints" / "final"))


@app.command("check-data")
def check_data(
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    gap_pairs: GapPairsOpt = None,
    words: Annotated[
        Path | None,
        typer.Option(help="Also check that this word-list JSON names the dataset's classes."),
    ] = None,
    classifier: ClassifierOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    clip_model: ClipModelOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
) -> None:
    """Check a downloaded layout without training or embedding anything: metadata, every
    listed image file (names the first missing one), group counts, gap pairs, word lists."""
    from tldr_cli.checkdata import check_data as run_check
    from tldr_cli.checkdata import format_report

    cfg = _resolve(
        preset,
        dataset=dataset,
        data_root=data_root,
        arch=arch,
        backbone_weights=backbone_weights,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        gap_pairs=gap_pairs,
    )
    report = run_check(cfg, gap_pairs=cfg.gap_pairs, words=words, classifier=classifier)
    typer.echo(format_report(report))


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
