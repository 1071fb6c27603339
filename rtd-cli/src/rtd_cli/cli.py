"""The `rtd` command line: wiring only; each command's work lives in its own module."""

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
    make_app,
    on_off,
    run_app,
)
from rtd_cli import __version__
from rtd_cli.config import TOY_EVAL_DISTRACTORS, TOY_EVAL_QUERIES

app = make_app(
    "rtd",
    "RTD: fine-tune a CLIP text encoder on text triplets for zero-shot composed image retrieval, and evaluate Pic2Word / SEARLE / LinCIR with or without it.",
    __version__,
)


# --------------------------------------------------------------------------- train
# (R2) `rtd train` and `rtd train-phi`: options map one-to-one onto rtd_cli.config fields;
# None keeps the preset's value.
_TRAIN = "Training"
_DATA = "Data"
_VAL = "Validation"


# One meaning in every rtd command: the toy world's data seed (make demo-rtd TOY_SEED=N).
ToySeedOpt = Annotated[
    int | None,
    typer.Option(
        "--toy-seed",
        help="Data seed of the toy world: draws the toy captions / triplets and the toy "
        "benchmark's queries, gallery and distractors (0 by default; --seed is the "
        "training seed).",
        rich_help_panel=_DATA,
    ),
]


def _print_json(obj) -> None:
    import json

    from labshared.runs import to_jsonable

    typer.echo(json.dumps(to_jsonable(obj), indent=2))


@app.command("train")
def train_cmd(
    preset: Annotated[
        str,
        typer.Option(
            help="Preset: rtd-vit-l14 (the official RTD run), rtd-vit-b32, rtd-vit-bigg14 "
            "(its values on those backbones), toy."
        ),
    ] = "rtd-vit-l14",
    backbone: Annotated[
        str | None,
        typer.Option(help="open_clip architecture (ViT-B-32, ViT-L-14, tiny-clip-toy, ...)."),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(help="open_clip weight tag or local checkpoint; 'random' for none."),
    ] = None,
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
            help="Projection checkpoint of the base ({'Phi': ...} or Pic2Word's state_dict_img2text)."
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
            help="Text triplets: LLM_triplets.json, a .jsonl file, a save_to_disk folder, a hub id, or toy[:N].",
            rich_help_panel=_DATA,
        ),
    ] = None,
    triplet_columns: Annotated[
        str | None,
        typer.Option(
            help="Column map, e.g. 'ref=source_caption,cond=instruction,target=target_caption'.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    triplet_split: Annotated[
        str | None,
        typer.Option(help="Split of a hub dataset or DatasetDict.", rich_help_panel=_DATA),
    ] = None,
    triplet_limit: Annotated[
        int | None, typer.Option(help="Use only the first N rows.", rich_help_panel=_DATA)
    ] = None,
    toy_seed: ToySeedOpt = None,
    noise_scale: Annotated[
        float | None,
        typer.Option(
            help="sigma of the phi-input noise e + sigma*U(0,1)*N(0,I) (paper 0.5).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    tau: Annotated[
        float | None,
        typer.Option(
            help="Temperature of the contrastive loss (paper 0.07).", rich_help_panel=_TRAIN
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (paper 2000).", rich_help_panel=_TRAIN)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Triplets per process per step (paper 128 on each of 4 GPUs).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="AdamW learning rate, constant (paper 1e-5).", rich_help_panel=_TRAIN),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(help="AdamW weight decay (paper 0.01).", rich_help_panel=_TRAIN),
    ] = None,
    max_grad_norm: Annotated[
        float | None,
        typer.Option(help="Clip the gradient norm (paper: no clipping).", rich_help_panel=_TRAIN),
    ] = None,
    train_layers: Annotated[
        str | None,
        typer.Option(
            help="Train only these comma-separated parameter prefixes, e.g. 'transformer.resblocks.11,ln_final,text_projection' (default: the whole tower).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    gather_negatives: Annotated[
        bool | None,
        typer.Option(
            "--gather-negatives/--local-negatives",
            help="All-gather negatives across torchrun ranks (paper: local, per GPU).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            help="Steps between resumable checkpoints (the last step always saves).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    stop_after: Annotated[
        int | None,
        typer.Option(
            help="Leave after N steps of this invocation with a checkpoint; continue with --resume.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    val_dataset: Annotated[
        str | None,
        typer.Option(
            help="Validate every --val-every steps on this `rtd eval` dataset (toy, cirr, ...).",
            rich_help_panel=_VAL,
        ),
    ] = None,
    val_root: Annotated[
        str | None, typer.Option(help="Root folder of --val-dataset.", rich_help_panel=_VAL)
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Steps between validations.", rich_help_panel=_VAL)
    ] = None,
    keep_best: Annotated[
        str | None,
        typer.Option(
            help="Also keep the tower best on this validation metric in best/ (default: report the fixed-step model only).",
            rich_help_panel=_VAL,
        ),
    ] = None,
    log_every: Annotated[int | None, typer.Option(help="Steps between log lines.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config and exit.")
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Random seed (paper 12345; each torchrun rank adds its rank).",
            rich_help_panel="Runtime",
        ),
    ] = None,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Fine-tune the CLIP text tower with RTD on text triplets (runs under torchrun too)."""
    from rtd_cli import config as C

    cfg = C.resolve(
        C.TRAIN_PRESETS, preset, backbone=backbone, pretrained=pretrained, base=base, phi=phi,
        quick_gelu=on_off(quick_gelu),
        prompt=prompt, triplets=triplets, triplet_columns=triplet_columns, triplet_split=triplet_split,
        triplet_limit=triplet_limit, toy_seed=toy_seed, noise_scale=noise_scale, tau=tau,
        steps=steps,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        train_layers=train_layers, gather_negatives=gather_negatives,
        checkpoint_every=checkpoint_every, val_dataset=val_dataset, val_root=val_root,
        val_every=val_every, keep_best=keep_best, log_every=log_every, seed=seed,
    )  # fmt: skip
    if dry_run:
        _print_json({"preset": preset, "config": cfg})
        return
    from labshared.device import setup_runtime
    from rtd_cli.projection import load_projection
    from rtd_cli.train import run

    load_projection(cfg.phi, cfg.base)  # a bad --phi is one red line before any model loads

    runtime = setup_runtime(device, precision, cfg.seed, deterministic)
    run_dir, metrics = run(cfg, runtime, output_dir=output_dir, resume=resume, overwrite=overwrite,
                           stop_after=stop_after, no_cache=no_cache)  # fmt: skip
    if runtime.is_main:
        keys = ("step", "loss", "stopped", "text_tower", "best", "triplets_per_second")
        _print_json({"run_dir": str(run_dir), **{k: metrics[k] for k in keys if k in metrics}})


@app.command("train-phi")
def train_phi_cmd(
    preset: Annotated[
        str,
        typer.Option(
            help="Preset: lincir-vit-l14 (LinCIR's README run), lincir-vit-bigg14, "
            "lincir-vit-b32 (its values on those backbones), toy."
        ),
    ] = "lincir-vit-l14",
    backbone: Annotated[str | None, typer.Option(help="open_clip architecture.")] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(help="open_clip weight tag or local checkpoint; 'random' for none."),
    ] = None,
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
            help="Captions: .txt (one a line), .json, .jsonl, a save_to_disk folder, a hub id, or toy[:N].",
            rich_help_panel=_DATA,
        ),
    ] = None,
    caption_column: Annotated[
        str | None,
        typer.Option(
            help="Field holding the caption (LinCIR's hub sets: text).", rich_help_panel=_DATA
        ),
    ] = None,
    caption_limit: Annotated[
        int | None, typer.Option(help="Use only the first N captions.", rich_help_panel=_DATA)
    ] = None,
    toy_seed: ToySeedOpt = None,
    keywords: Annotated[
        str | None,
        typer.Option(
            help="Keyword masking: auto (spaCy en_core_web_sm if installed, else built-in), spacy, builtin.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    noise_scale: Annotated[
        float | None,
        typer.Option(help="sigma of the input noise (LinCIR 1.0).", rich_help_panel=_TRAIN),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(
            help="Projection dropout while training (default: the base's, Phi 0.5).",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps.", rich_help_panel=_TRAIN)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Captions per process per step (LinCIR 256).", rich_help_panel=_TRAIN),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="AdamW learning rate (LinCIR 1e-4).", rich_help_panel=_TRAIN),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(help="AdamW weight decay (LinCIR 0.01).", rich_help_panel=_TRAIN),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(help="Steps between resumable checkpoints.", rich_help_panel=_TRAIN),
    ] = None,
    stop_after: Annotated[
        int | None,
        typer.Option(
            help="Leave after N steps of this invocation; continue with --resume.",
            rich_help_panel=_TRAIN,
        ),
    ] = None,
    log_every: Annotated[int | None, typer.Option(help="Steps between log lines.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config and exit.")
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Random seed (each torchrun rank adds its rank).",
            rich_help_panel="Runtime",
        ),
    ] = None,
    deterministic: DeterministicOpt = False,
    output_dir: OutputDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train the projection phi LinCIR-style on captions only (keyword masking + MSE)."""
    from rtd_cli import config as C

    cfg = C.resolve(
        C.PHI_PRESETS, preset, backbone=backbone, pretrained=pretrained, base=base,
        quick_gelu=on_off(quick_gelu),
        captions=captions, caption_column=caption_column, caption_limit=caption_limit,
        toy_seed=toy_seed, keywords=keywords, noise_scale=noise_scale, dropout=dropout, steps=steps,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        checkpoint_every=checkpoint_every, log_every=log_every, seed=seed,
    )  # fmt: skip
    if dry_run:
        _print_json({"preset": preset, "config": cfg})
        return
    from labshared import distributed
    from labshared.device import setup_runtime
    from rtd_cli.train import shared_run_dir
    from rtd_cli.train_phi import train_phi

    runtime = setup_runtime(device, precision, cfg.seed, deterministic)
    try:
        run_dir = shared_run_dir("train-phi", output_dir, resume, overwrite, runtime)
        metrics = train_phi(cfg, run_dir, runtime, resume=resume, stop_after=stop_after)
    finally:
        distributed.cleanup()
    if runtime.is_main:
        keys = ("step", "loss", "stopped", "phi", "keywords", "slot_fallbacks")
        _print_json({"run_dir": str(run_dir), **{k: metrics[k] for k in keys if k in metrics}})


# --------------------------------------------------------------------------- eval
# (R1) `rtd eval`: options map one-to-one onto rtd_cli.evaluate.EvalConfig fields.
_EVAL_DATA = "Benchmark"
_EVAL_MODEL = "Model"


@app.command("eval")
def eval_cmd(
    dataset: Annotated[
        str,
        typer.Option(
            help="Benchmark: fashioniq, cirr, circo, genecis or toy.", rich_help_panel=_EVAL_DATA
        ),
    ],
    phi: Annotated[
        Path,
        typer.Option(
            help="Projection checkpoint of --base in its official format ({'Phi': ...} or "
            "Pic2Word's {'state_dict_img2text': ...}).",
            rich_help_panel=_EVAL_MODEL,
        ),
    ],
    base: Annotated[
        str,
        typer.Option(
            help="Base method: pic2word (IM2TEXT), searle or lincir (Phi).",
            rich_help_panel=_EVAL_MODEL,
        ),
    ] = "lincir",
    backbone: Annotated[
        str,
        typer.Option(
            help="open_clip architecture: ViT-B-32, ViT-L-14, ViT-H-14, ViT-bigG-14, tiny-clip-toy, "
            "or local-dir:PATH.",
            rich_help_panel=_EVAL_MODEL,
        ),
    ] = "ViT-B-32",
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="open_clip weight tag or local checkpoint file (default: openai for B-32/L-14, "
            "laion2b_s32b_b79k for H-14, laion2b_s39b_b160k for bigG, the fitted toy weights "
            "for tiny-clip-toy); 'random' for none.",
            rich_help_panel=_EVAL_MODEL,
        ),
    ] = None,
    quick_gelu: QuickGeluOpt = None,
    text_encoder: Annotated[
        Path | None,
        typer.Option(
            help="Text tower trained by `rtd train` (text_tower.safetensors or its folder); "
            "default: the backbone's own text tower.",
            rich_help_panel=_EVAL_MODEL,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="val or test (default: val; test for genecis). CIRR/CIRCO test write server files.",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Benchmark folder in its official layout (see README), or 'hf' for the "
            "Hugging Face copies of CIRR/FashionIQ; not needed for toy.",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="rtd: 'a photo of $ that {mod}' for every base (RTD's evaluation); base: each "
            "base repo's own prompt (Pic2Word 'a photo of * , {mod}'). Default: the style the "
            "--text-encoder was trained with, else the base's (as `rtd train`): base for "
            "pic2word, rtd for searle/lincir.",
            rich_help_panel=_EVAL_MODEL,
        ),
    ] = None,
    fiq_orders: Annotated[
        str | None,
        typer.Option(
            help="FashionIQ captions: both (c1 and c2 + c2 and c1, averaged; SEARLE/LinCIR/RTD) "
            "or single (Pic2Word's c2 and c1). Default follows --prompt and --base.",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = None,
    parts: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated FashionIQ categories (dress,shirt,toptee) or GeneCIS tasks "
            "(focus_attribute,change_attribute,focus_object,change_object); default all.",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = None,
    toy_queries: Annotated[
        int,
        typer.Option(
            help="Toy benchmark: composed queries (their targets open the gallery).",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = TOY_EVAL_QUERIES,
    toy_distractors: Annotated[
        int | None,
        typer.Option(
            help="Toy benchmark: random images of the split added to the gallery "
            f"(default {TOY_EVAL_DISTRACTORS}).",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = TOY_EVAL_DISTRACTORS,
    toy_seed: Annotated[
        int,
        typer.Option(
            "--toy-seed",
            help="Data seed of the toy world: draws the toy benchmark's queries, targets and "
            "distractors.",
            rich_help_panel=_EVAL_DATA,
        ),
    ] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per encoding batch.")] = 128,
    workers: Annotated[
        int | None,
        typer.Option(help="DataLoader workers decoding images (default: 8 on CUDA, 0 on CPU)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics as JSON instead of a table.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the resolved config and exit (`rtd check-data` checks a data layout).",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Runtime seed (scoring draws nothing; the toy benchmark's is --toy-seed).",
            rich_help_panel="Runtime",
        ),
    ] = 0,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Score a ZS-CIR method (Pic2Word / SEARLE / LinCIR, optionally + an RTD text tower)."""
    from rtd_cli.evaluate import EvalConfig, default_prompt_style, read_text_encoder_config

    # Read the whole tower first: a bad --text-encoder file is one red line, before any model.
    tower_config = read_text_encoder_config(text_encoder) if text_encoder else None
    if prompt is None:
        prompt = default_prompt_style(base, tower_config)
    cfg = EvalConfig(
        dataset=dataset, base=base, phi=phi, backbone=backbone, split=split, pretrained=pretrained,
        quick_gelu=on_off(quick_gelu),
        text_encoder=text_encoder, data_root=data_root, prompt=prompt, fiq_orders=fiq_orders,
        parts=tuple(p.strip() for p in parts.split(",") if p.strip()) if parts else None,
        batch_size=batch_size, workers=workers, toy_queries=toy_queries,
        toy_distractors=toy_distractors, toy_seed=toy_seed,
        cache=not no_cache,
    )  # fmt: skip
    if dry_run:
        _print_json({"config": cfg})
        return
    cfg.validate()
    from labshared.console import log
    from labshared.device import setup_runtime
    from labshared.runs import create_run_dir, write_config
    from rtd_cli.evaluate import format_table, run_eval

    runtime = setup_runtime(device, precision, seed)
    run_dir = create_run_dir("rtd", "eval", output_dir, overwrite=overwrite)
    write_config(run_dir, cfg, runtime=runtime.describe(), tool="rtd", version=__version__)
    log(f"rtd {__version__} eval | {runtime.describe()} | run folder {run_dir}")
    result = run_eval(cfg, run_dir, runtime)
    if as_json:
        _print_json(result)
    else:
        typer.echo(format_table(result))
    log(f"metrics: {run_dir / 'metrics.json'}")


# --------------------------------------------------------------------------- check-data
@app.command("check-data")
def check_data_cmd(
    dataset: Annotated[
        str, typer.Option(help="Benchmark: fashioniq, cirr, circo, genecis (or toy).")
    ],
    data_root: Annotated[
        Path | None,
        typer.Option(help="The benchmark folder in its official layout (see README)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="val or test (default: as `rtd eval`).")] = None,
    parts: Annotated[
        str | None,
        typer.Option(help="Comma-separated FashionIQ categories or GeneCIS tasks (default all)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
) -> None:
    """Check a downloaded benchmark without running a model: read its annotations as `rtd
    eval` does, count queries and images, and name the first missing image file."""
    from labshared.console import log
    from rtd_cli.datacheck import check_layout, first_missing_error, format_reports

    part_list = tuple(p.strip() for p in parts.split(",") if p.strip()) if parts else None
    reports = check_layout(dataset, data_root, split, part_list)
    if as_json:
        _print_json({"dataset": dataset, "data_root": data_root, "parts": reports})
    else:
        typer.echo(format_reports(dataset, data_root, reports))
    error = first_missing_error(dataset, reports)
    if error is not None:
        raise error
    log(f"{dataset}: annotations read and every image file found")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
