"""`rtd train` and `rtd train-phi`: options, config, run start; the work is in `train.py` /
`train_phi.py`.

Each option maps onto the `rtd_cli.config` field of the same name (None keeps the preset's
value); the others are run-level (runtime, run folder, `--stop-after`, `--init-from`,
`--report-to`, `--dry-run`).
"""

from typing import Annotated

import typer

from labshared import distributed
from labshared.cli import (
    DeterministicOpt,
    DeviceOpt,
    InitFromOpt,
    NoCacheOpt,
    OutputDirOpt,
    OverwriteOpt,
    PrecisionOpt,
    PresetOpt,
    QuickGeluOpt,
    ReportToOpt,
    ResumeOpt,
    SeedOpt,
    on_off,
)
from labshared.config import RUNTIME_KNOBS, resolve
from labshared.launch import start_run
from labshared.training import parse_report_to
from rtd_cli import __version__
from rtd_cli.cli_common import (
    DATA_PANEL,
    TRAIN_PANEL,
    VAL_PANEL,
    DryRunOpt,
    LogEveryOpt,
    ToySeedOpt,
    field_overrides,
    print_json,
)
from rtd_cli.config import (
    PHI_PRESET_PROCESSES,
    PHI_PRESETS,
    RENAMED_PRESETS,
    TRAIN_KNOBS,
    TRAIN_PRESET_PROCESSES,
    TRAIN_PRESETS,
    PhiConfig,
    TrainConfig,
    validate_phi,
    validate_train,
)

BackboneOpt = Annotated[
    str | None,
    typer.Option(help="open_clip architecture (ViT-B-32, ViT-L-14, tiny-clip-toy, ...)."),
]
PretrainedOpt = Annotated[
    str | None,
    typer.Option(help="open_clip weight tag or local checkpoint; 'random' for none."),
]
StepsOpt = Annotated[int | None, typer.Option(help="Optimizer steps.", rich_help_panel=TRAIN_PANEL)]
CheckpointEveryOpt = Annotated[
    int | None,
    typer.Option(
        help="Steps between resumable checkpoints (the last step always saves).",
        rich_help_panel=TRAIN_PANEL,
    ),
]
StopAfterOpt = Annotated[
    int | None,
    typer.Option(
        help="Leave after N steps of this invocation with a checkpoint; continue with --resume.",
        rich_help_panel=TRAIN_PANEL,
    ),
]


def train_cmd(
    preset: PresetOpt = "rtd-vit-l14",
    backbone: BackboneOpt = None,
    pretrained: PretrainedOpt = None,
    quick_gelu: QuickGeluOpt = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="Base method of --phi: lincir, searle (Phi, '$') or pic2word (IM2TEXT, '*')."
        ),
    ] = None,
    phi: Annotated[
        str | None,
        typer.Option(
            help="Projection checkpoint of the base ({'Phi': ...} or Pic2Word's "
            "state_dict_img2text)."
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Query prompt style, as `rtd eval --prompt`: rtd ('a photo of $ that {mod}') or "
            "base (the base's own; Pic2Word 'a photo of * , {mod}'). Default: base for pic2word, "
            "rtd otherwise.",
        ),
    ] = None,
    triplets: Annotated[
        str | None,
        typer.Option(
            help="Text triplets: LLM_triplets.json, a .jsonl file, a save_to_disk folder, a hub "
            "id, or toy[:N].",
            rich_help_panel=DATA_PANEL,
        ),
    ] = None,
    triplet_columns: Annotated[
        str | None,
        typer.Option(
            help="Column map, e.g. 'ref=source_caption,cond=instruction,target=target_caption'.",
            rich_help_panel=DATA_PANEL,
        ),
    ] = None,
    triplet_split: Annotated[
        str | None,
        typer.Option(help="Split of a hub dataset or DatasetDict.", rich_help_panel=DATA_PANEL),
    ] = None,
    triplet_limit: Annotated[
        int | None, typer.Option(help="Use only the first N rows.", rich_help_panel=DATA_PANEL)
    ] = None,
    toy_seed: ToySeedOpt = None,
    noise_scale: Annotated[
        float | None,
        typer.Option(
            help="sigma of the phi-input noise e + sigma*U(0,1)*N(0,I) (paper 0.5).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    tau: Annotated[
        float | None,
        typer.Option(
            help="Temperature of the contrastive loss (paper 0.07).", rich_help_panel=TRAIN_PANEL
        ),
    ] = None,
    steps: StepsOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Triplets per process per step (paper 128: the official 4 GPUs never "
            "averaged gradients, so one process at 128).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="AdamW learning rate, constant (paper 1e-5).", rich_help_panel=TRAIN_PANEL
        ),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(help="AdamW weight decay (paper 0.01).", rich_help_panel=TRAIN_PANEL),
    ] = None,
    max_grad_norm: Annotated[
        float | None,
        typer.Option(
            help="Clip the gradient norm (paper: no clipping).", rich_help_panel=TRAIN_PANEL
        ),
    ] = None,
    train_layers: Annotated[
        str | None,
        typer.Option(
            help="Train only these comma-separated parameter prefixes, e.g. "
            "'transformer.resblocks.11,ln_final,text_projection' (default: the whole tower).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    gather_negatives: Annotated[
        bool | None,
        typer.Option(
            "--gather-negatives/--local-negatives",
            help="All-gather negatives across torchrun ranks (paper: local, per GPU).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    cache_anchors: Annotated[
        bool | None,
        typer.Option(
            "--cache-anchors/--no-cache-anchors",
            help="Encode the frozen anchors of the whole triplet set once (cached) instead of "
            "in every step; pays when the set is read more than once.",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the trainable text tower.",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    grad_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--grad-checkpointing/--no-grad-checkpointing",
            help="Recompute the trainable tower's activations in backward (less memory, for "
            "ViT-H/bigG).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    checkpoint_every: CheckpointEveryOpt = None,
    stop_after: StopAfterOpt = None,
    val_dataset: Annotated[
        str | None,
        typer.Option(
            help="Validate every --val-every steps on this `rtd eval` dataset (toy, cirr, ...).",
            rich_help_panel=VAL_PANEL,
        ),
    ] = None,
    val_root: Annotated[
        str | None, typer.Option(help="Root folder of --val-dataset.", rich_help_panel=VAL_PANEL)
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Steps between validations.", rich_help_panel=VAL_PANEL)
    ] = None,
    keep_best: Annotated[
        str | None,
        typer.Option(
            help="Also keep the tower best on this validation metric in best/ (default: report "
            "the fixed-step model only).",
            rich_help_panel=VAL_PANEL,
        ),
    ] = None,
    log_every: LogEveryOpt = None,
    dry_run: DryRunOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    init_from: InitFromOpt = None,
    report_to: ReportToOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Fine-tune the CLIP text tower with RTD on text triplets (runs under torchrun too).

    Presets: rtd-vit-l14 (what the official RTD run computed: ONE process at batch 128. Its
    run.sh starts 4 GPUs, but train_text_encoder.py line 262 calls the tower through
    `.module`, past DDP, so gradients were never averaged and rank 0's copy was saved),
    rtd-vit-l14-ddp4 (4 processes x 128, gradients averaged: 512 per step), rtd-vit-b32,
    rtd-vit-bigg14 (the one-process values on those backbones), toy. Without --seed, the
    preset's (the paper's 12345).
    """
    args = {**locals(), "quick_gelu": on_off(quick_gelu)}
    cfg = resolve(
        TRAIN_PRESETS, preset, field_overrides(TrainConfig, args), validate=validate_train,
        renamed=RENAMED_PRESETS,
    )  # fmt: skip
    if dry_run:
        print_json({"preset": preset, "config": cfg})
        return
    # open_clip and the models load only when a command runs, so `rtd --help` stays fast
    from rtd_cli import train

    keys = ("step", "loss", "stopped", "text_tower", "best", "triplets_per_second")
    _run_and_report(
        "train", train, cfg, args, keys, TRAIN_KNOBS, TRAIN_PRESET_PROCESSES, no_cache=no_cache
    )


def train_phi_cmd(
    preset: PresetOpt = "lincir-vit-l14",
    backbone: BackboneOpt = None,
    pretrained: PretrainedOpt = None,
    quick_gelu: QuickGeluOpt = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="Projection to train: lincir/searle (Phi, '$') or pic2word (IM2TEXT, '*')."
        ),
    ] = None,
    captions: Annotated[
        str | None,
        typer.Option(
            help="Captions: .txt (one a line), .json, .jsonl, a save_to_disk folder, a hub id, "
            "or toy[:N].",
            rich_help_panel=DATA_PANEL,
        ),
    ] = None,
    caption_column: Annotated[
        str | None,
        typer.Option(
            help="Field holding the caption (LinCIR's hub sets: text).", rich_help_panel=DATA_PANEL
        ),
    ] = None,
    caption_limit: Annotated[
        int | None, typer.Option(help="Use only the first N captions.", rich_help_panel=DATA_PANEL)
    ] = None,
    toy_seed: ToySeedOpt = None,
    keywords: Annotated[
        str | None,
        typer.Option(
            help="Keyword masking: spacy (LinCIR's rule with en_core_web_sm; the lincir "
            "presets' default, which stops if it is not installed), builtin (the built-in "
            "approximation), auto (spacy if installed, else builtin).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    noise_scale: Annotated[
        float | None,
        typer.Option(help="sigma of the input noise (LinCIR 1.0).", rich_help_panel=TRAIN_PANEL),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(
            help="Projection dropout while training (default: the base's, Phi 0.5).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    steps: StepsOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Captions per process per step (LinCIR 256).", rich_help_panel=TRAIN_PANEL
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="AdamW learning rate (LinCIR 1e-4).", rich_help_panel=TRAIN_PANEL),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(help="AdamW weight decay (LinCIR 0.01).", rich_help_panel=TRAIN_PANEL),
    ] = None,
    checkpoint_every: CheckpointEveryOpt = None,
    stop_after: StopAfterOpt = None,
    log_every: LogEveryOpt = None,
    dry_run: DryRunOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    init_from: InitFromOpt = None,
    report_to: ReportToOpt = None,
) -> None:
    """Train the projection phi LinCIR-style on captions only (keyword masking + MSE).

    Presets: lincir-vit-l14 (LinCIR's README run: 8 processes x 64, gradients averaged),
    lincir-vit-bigg14, lincir-vit-b32 (its values on those backbones), toy. The lincir
    presets need spaCy and en_core_web_sm (LinCIR's masking) unless --keywords builtin.
    """
    args = {**locals(), "quick_gelu": on_off(quick_gelu)}
    cfg = resolve(
        PHI_PRESETS, preset, field_overrides(PhiConfig, args), validate=validate_phi,
        renamed=RENAMED_PRESETS,
    )  # fmt: skip
    if dry_run:
        print_json({"preset": preset, "config": cfg})
        return
    from rtd_cli import train_phi

    keys = ("step", "loss", "stopped", "phi", "keywords", "slot_fallbacks")
    _run_and_report("train-phi", train_phi, cfg, args, keys, RUNTIME_KNOBS, PHI_PRESET_PROCESSES)


def _run_and_report(
    command: str, workflow, cfg, args: dict, keys: tuple[str, ...], allowed, processes,
    **run_kwargs,
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
        inputs.append(parse_report_to(args["report_to"]))
        inputs.append(workflow.check_inputs(cfg))

    try:
        started = start_run(
            "rtd", command, cfg, version=__version__, preset=args["preset"],
            output_dir=args["output_dir"], resume=args["resume"], overwrite=args["overwrite"],
            device=args["device"], precision=args["precision"], seed=cfg.seed,
            deterministic=args["deterministic"], allowed_on_resume=allowed,
            validate=check, init_from=args["init_from"],
            batch_size=cfg.batch_size, preset_processes=processes.get(args["preset"]),
        )  # fmt: skip
        metrics = workflow.run(cfg, started, inputs[1], stop_after=args["stop_after"],
                               report_to=inputs[0], **run_kwargs)  # fmt: skip
    finally:
        distributed.cleanup()
    if started.runtime.is_main:
        print_json({"run_dir": str(started.dir), **{k: metrics[k] for k in keys if k in metrics}})
