"""The `tldr` command line: wiring only; each command's work lives in its own module.

Every flag of `filter`, `retrain`, `erm` and `check-data` sets the `config.TLDRConfig`
field of the same name (`--erm-recipe` <-> `erm_recipe`, `--head-lr` <-> `head_lr`), and
every flag of `generate` the `generate.GenerateConfig` field of the same name; the
options every tool shares (`--preset`, `--device`, `--precision`, `--seed`, `-o`,
`--resume`, `--overwrite`, `--no-cache`) come from `labshared.cli` and are not fields. A
command resolves its config with `labshared.config.resolve` (defaults < preset < the flags
passed), then starts its run with `labshared.launch.start_run`, which runs the command's
input checks before it makes the run folder: a failed check leaves no folder behind.

The command modules import torchvision, open_clip, scikit-learn and openai (several
seconds); each command imports its own in its body, so `tldr --help` answers at once.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from labshared.cli import (
    BootstrapSeedOpt,
    DeterministicOpt,
    DeviceOpt,
    InitFromOpt,
    IntersectOpt,
    JsonOpt,
    MarkdownOpt,
    NoCacheOpt,
    OutputDirOpt,
    OverwriteOpt,
    PrecisionOpt,
    PresetOpt,
    QuickGeluOpt,
    ReportToOpt,
    ResamplesOpt,
    ResumeOpt,
    SeedOpt,
    make_app,
    on_off,
    run_app,
)
from labshared.config import RUNTIME_KNOBS, resolve
from labshared.launch import start_run
from labshared.runs import write_metrics
from tldr_cli import __version__

app = make_app(
    "tldr",
    "TLDR: debias an image classifier by retraining its last layer on LLM-generated words "
    "projected from CLIP's text space.",
    __version__,
)

#: Parameters of the commands that are not config fields: the shared run options and
#: generate's two actions.
RUN_OPTIONS = frozenset(
    {"preset", "device", "precision", "seed", "deterministic", "output_dir", "resume",
     "overwrite", "no_cache", "dry_run", "offline_toy", "init_from", "report_to"}
)  # fmt: skip

#: Fields of `generate` a resumed run may change besides RUNTIME_KNOBS: they change how
#: the requests are sent or shown (HTTP timeout, the client's retries, printing the
#: prompts), never a request or its cache key.
GENERATE_KNOBS = RUNTIME_KNOBS | {"timeout", "max_retries", "show_prompts"}


def _overrides(ctx: typer.Context) -> dict[str, Any]:
    """The flags of the command being run that set config fields, by field name (None:
    the flag was not given); `labshared.config.resolve` refuses a name with no field."""
    given = {k: v for k, v in ctx.params.items() if k not in RUN_OPTIONS}
    if "quick_gelu" in given:
        given["quick_gelu"] = on_off(given["quick_gelu"])
    if given.get("from_file") is not None:
        given["from_file"] = tuple(given["from_file"])
    return given


# --------------------------------------------------------------------------- generate
@app.command()
def generate(
    ctx: typer.Context,
    preset: PresetOpt = None,
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
    key_env_var: Annotated[
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
        typer.Option(
            help="Seconds per HTTP request (default 120; the openai client's timeout).",
            rich_help_panel="Retries",
        ),
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option(
            help="Retries of a request by the openai client on 408/409/429/5xx, timeouts, "
            "dropped connections and unreadable bodies, with its backoff (0.5 s doubling "
            "to 8 s) or the server's Retry-After up to 120 s (default 5).",
            rich_help_panel="Retries",
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="JSON/TOML file replacing the prompts (see --dry-run).", rich_help_panel="LLM"
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
    show_prompts: Annotated[
        bool, typer.Option("--show-prompts", help="Print each prompt as it is sent (stderr).")
    ] = False,
    offline_toy: Annotated[
        bool,
        typer.Option(
            "--offline-toy",
            help="Use the shipped toy word lists (= --preset toy --from-file builtin:toy).",
        ),
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
    no_cache: NoCacheOpt = False,
) -> None:
    """Build the class and spurious word lists with an LLM (or import them) -> wordlists.json.

    --preset names the dataset whose lists are built: waterbirds, celeba, spuco-animals or
    toy (classes, spurious values, anchors, LLM descriptions). --no-cache: neither read nor
    write the shared LLM reply cache (the run folder's replies.jsonl is always kept for
    --resume).
    """
    from tldr_cli import generate as gen

    given = _overrides(ctx) | {"preset": preset}
    if offline_toy:
        given["preset"] = preset or "toy"
        given["from_file"] = (*(given["from_file"] or ()), "builtin:toy")
    cfg = resolve(gen.DEFAULTS, gen.DEFAULT, given, validate=gen.check_sources)
    if dry_run:
        typer.echo(
            json.dumps({"config": cfg.public(), "requests": gen.preview_prompts(cfg)}, indent=2)
        )
        return
    run = start_run(
        "tldr",
        "generate",
        cfg.public(),
        version=__version__,
        preset=cfg.preset,
        output_dir=output_dir,
        resume=resume,
        overwrite=overwrite,
        device="cpu",  # no tensor is computed: the run only talks HTTP and writes JSON
        validate=lambda: gen.check_inputs(cfg),
        allowed_on_resume=GENERATE_KNOBS,
    )
    wordlists, metrics = gen.run(cfg, run.dir, use_cache=not no_cache)
    write_metrics(run.dir, metrics)
    typer.echo(gen.lists_table(wordlists, metrics))
    typer.echo(str(run.dir / gen.WORDLISTS_FILE))


# --------------------------------------------------------------------------- filter / retrain / erm
# Options of `filter`, `retrain`, `erm` and `check-data`, each named after the TLDRConfig
# field it sets. Each defaults to None: keep the preset's value.
WordsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Word-list JSON (from `tldr generate`, or `tldr filter` for retrain); needed by "
        "filter and by retrain with --method tldr/both."
    ),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(help="tldr (text, no group labels), dfr (group-labelled val images) or both."),
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
        help="ERM initialisation: torchvision enum (IMAGENET1K_V1, downloads once), a local "
        ".pth/.safetensors ResNet-50 state dict, toy-digits (toy CNN), or none.",
        rich_help_panel="Classifier",
    ),
]
ErmRecipeOpt = Annotated[
    str | None,
    typer.Option(
        help="ERM recipe: paper-repo (TLDR script.sh), dfr-waterbirds, dfr-celeba or toy.",
        rich_help_panel="Classifier",
    ),
]
ClassifierOpt = Annotated[
    str | None,
    typer.Option(
        help="Trained classifier: a `tldr erm` run folder, a checkpoint folder, or a "
        "torchvision ResNet-50 state dict. Without it ERM is trained with the preset's "
        "recipe (cached).",
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
        help="What CLIP embeds for the projector: clip (its own preprocessing) or classifier "
        "(the official code's ImageNet-normalised tensors).",
        rich_help_panel="CLIP",
    ),
]
GapPairsOpt = Annotated[
    str | None,
    typer.Option(
        help="Image-caption pairs for the modality gap: a COCO captions folder, a JSONL file, "
        "or toy.",
        rich_help_panel="Projector",
    ),
]
NGapOpt = Annotated[
    int | None,
    typer.Option(help="Pairs used for the mean gap (1000).", rich_help_panel="Projector"),
]
RidgeLambdaOpt = Annotated[
    float | None,
    typer.Option(
        help="Ridge penalty lambda of the projector (paper presets 50; toy: see the preset).",
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
HeadEpochsOpt = Annotated[
    int | None,
    typer.Option(help="Epochs of the new head (paper presets 1; toy 200).", rich_help_panel="Head"),
]
HeadLrOpt = Annotated[
    float | None,
    typer.Option(
        help="AdamW learning rate of the new head (paper presets 1e-4; toy 3e-2).",
        rich_help_panel="Head",
    ),
]
HeadWeightDecayOpt = Annotated[
    float | None,
    typer.Option(help="AdamW weight decay of the new head (1e-4).", rich_help_panel="Head"),
]
HeadBatchSizeOpt = Annotated[
    int | None, typer.Option(help="Text pairs per batch (128).", rich_help_panel="Head")
]
TemplateDrawOpt = Annotated[
    str | None,
    typer.Option(
        help="Template draw: all (80 templates) or official (randint(0, 79), never the 80th).",
        rich_help_panel="Head",
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
DfrRetrainsOpt = Annotated[
    int | None, typer.Option(help="DFR fits averaged (20).", rich_help_panel="DFR")
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


def _config_and_run(ctx: typer.Context, command: str, *, resume: bool = False):
    """Resolve the TLDRConfig of `command` from its flags and start its run (the inputs,
    `--report-to` and `--init-from` are checked before the run folder is made); returns
    (config, run, the trackers of `--report-to`)."""
    from labshared.training import parse_report_to
    from tldr_cli.config import PRESETS, validate_inputs
    from tldr_cli.labels import check_words_match_dataset

    p = ctx.params
    cfg = resolve(PRESETS, p["preset"], _overrides(ctx))
    trackers: list[str] = []

    def validate() -> None:
        trackers.extend(parse_report_to(p.get("report_to")))
        if p.get("init_from") is not None:
            from tldr_cli.erm import check_init_from

            check_init_from(p["init_from"], cfg)
        validate_inputs(cfg, command)
        check_words_match_dataset(cfg, command)

    run = start_run(
        "tldr",
        command,
        cfg,
        version=__version__,
        preset=p["preset"],
        output_dir=p["output_dir"],
        resume=resume,
        overwrite=p["overwrite"],
        resumable=command == "erm",  # filter and retrain have no --resume
        device=p["device"],
        precision=p["precision"],
        seed=p["seed"],
        deterministic=p["deterministic"],
        validate=validate,
        init_from=p.get("init_from"),
    )
    return cfg, run, tuple(trackers)


@app.command("filter")
def filter_words(
    ctx: typer.Context,
    words: Annotated[Path, typer.Option(help="Word-list JSON (from `tldr generate`).")],
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    classifier: ClassifierOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    erm_recipe: ErmRecipeOpt = None,
    clip_model: ClipModelOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
    quick_gelu: QuickGeluOpt = None,
    clip_input: ClipInputOpt = None,
    gap_pairs: GapPairsOpt = None,
    n_gap_pairs: NGapOpt = None,
    ridge_lambda: RidgeLambdaOpt = None,
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
    """Stage 1 (CLIP anchor) and stage 2 (ERM head on projected words) word filter ->
    wordlists.json. Presets: toy (offline), waterbirds, celeba, spuco-animals."""
    from tldr_cli.filter import run_filter, summary_table

    cfg, run, _ = _config_and_run(ctx, "filter")
    out, summary, _ = run_filter(cfg, run.runtime, run.dir, use_cache=not no_cache)
    typer.echo(summary_table(summary))
    typer.echo(
        f"removed: {summary['removed_stage1']} by the CLIP anchor filter, "
        f"{summary['removed_stage2']} by the classifier filter (filter_report.json)"
    )
    typer.echo(str(out))


@app.command()
def retrain(
    ctx: typer.Context,
    words: WordsOpt = None,
    method: MethodOpt = None,
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    classifier: ClassifierOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    erm_recipe: ErmRecipeOpt = None,
    clip_model: ClipModelOpt = None,
    clip_pretrained: ClipPretrainedOpt = None,
    quick_gelu: QuickGeluOpt = None,
    clip_input: ClipInputOpt = None,
    gap_pairs: GapPairsOpt = None,
    n_gap_pairs: NGapOpt = None,
    ridge_lambda: RidgeLambdaOpt = None,
    preprocess_embed: PreprocessEmbedOpt = None,
    head_epochs: HeadEpochsOpt = None,
    head_lr: HeadLrOpt = None,
    head_weight_decay: HeadWeightDecayOpt = None,
    head_batch_size: HeadBatchSizeOpt = None,
    template_draw: TemplateDrawOpt = None,
    templates: TemplatesOpt = None,
    dfr_retrains: DfrRetrainsOpt = None,
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
    report_to: ReportToOpt = None,
) -> None:
    """Retrain the last layer on projected text pairs (TLDR) and/or DFR; table of ERM vs
    TLDR vs DFR. Presets: toy (offline), waterbirds, celeba, spuco-animals."""
    from tldr_cli.retrain import run_retrain

    cfg, run, trackers = _config_and_run(ctx, "retrain")
    _, table = run_retrain(cfg, run.runtime, run.dir, use_cache=not no_cache, report_to=trackers)
    typer.echo(table)
    typer.echo(str(run.dir / "metrics.json"))


@app.command()
def erm(
    ctx: typer.Context,
    preset: PresetOpt = "toy",
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    arch: ArchOpt = None,
    backbone_weights: BackboneOpt = None,
    erm_recipe: ErmRecipeOpt = None,
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
    init_from: InitFromOpt = None,
    report_to: ReportToOpt = None,
) -> None:
    """Train the ERM classifier (paper-repo or DFR recipe) and report its group accuracies.
    Presets: toy (offline), waterbirds, celeba, spuco-animals."""
    from tldr_cli.erm import run_erm

    cfg, run, trackers = _config_and_run(ctx, "erm", resume=resume)
    _, table = run_erm(cfg, run.runtime, run.dir, resume=run.resumed, use_cache=not no_cache,
                       init_from=run.init_from, report_to=trackers)  # fmt: skip
    typer.echo(table)
    typer.echo(str(run.dir / "checkpoints" / "final"))


@app.command("compare")
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="`tldr retrain` / `tldr erm` run folders (all their methods), or "
            "RUN:METHOD (e.g. runs/x:TLDR); two or more methods in all."
        ),
    ],
    intersect: IntersectOpt = False,
    seed: BootstrapSeedOpt = 0,
    resamples: ResamplesOpt = 10_000,
    markdown: MarkdownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare methods image by image on the same test images: worst-group, average
    (train-weighted), class-balanced and plain accuracy, each with its 95 % interval, and
    each method's paired difference to the first with its interval and p-value."""
    from labshared.compare import format_comparison
    from labshared.stats import BootstrapSpec
    from tldr_cli.outputs import compare_runs, headlines

    result = compare_runs(runs, BootstrapSpec(n_resamples=resamples, seed=seed), intersect)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(format_comparison(result, headlines(), markdown=markdown))


@app.command("check-data")
def check_data(
    ctx: typer.Context,
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
    listed image file (names the first missing one), group counts, gap pairs, word lists.
    Writes no run folder."""
    from tldr_cli.checkdata import check_data as run_check
    from tldr_cli.checkdata import format_report
    from tldr_cli.config import PRESETS

    cfg = resolve(PRESETS, preset, _overrides(ctx))
    typer.echo(format_report(run_check(cfg)))


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
