"""`rtd eval`: options, config, run start, and the metrics table it prints; the work is in
`evaluate.py`.

Each option maps onto the `rtd_cli.eval_config.EvalConfig` field of the same name (None
keeps its default); the others are run-level (runtime, run folder, `--json`, `--dry-run`).
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from labshared.cli import (
    DeviceOpt,
    NoCacheOpt,
    OutputDirOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuickGeluOpt,
    SeedOpt,
    on_off,
)
from labshared.console import log, render_table
from labshared.launch import start_run
from rtd_cli import __version__
from rtd_cli.cli_common import ToySeedOpt, field_overrides, print_json
from rtd_cli.config import TOY_EVAL_DISTRACTORS, TOY_EVAL_QUERIES
from rtd_cli.eval_config import EvalConfig, resolve_eval

_BENCH = "Benchmark"
_MODEL = "Model"


def eval_cmd(
    dataset: Annotated[
        str,
        typer.Option(
            help="Benchmark: fashioniq, cirr, circo, genecis or toy.", rich_help_panel=_BENCH
        ),
    ],
    phi: Annotated[
        Path,
        typer.Option(
            help="Projection checkpoint of --base in its official format ({'Phi': ...} or "
            "Pic2Word's {'state_dict_img2text': ...}).",
            rich_help_panel=_MODEL,
        ),
    ],
    base: Annotated[
        str | None,
        typer.Option(
            help="Base method: pic2word (IM2TEXT), searle or lincir (Phi). Default lincir.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="open_clip architecture: ViT-B-32 (default; tiny-clip-toy for --dataset toy), "
            "ViT-L-14, ViT-H-14, ViT-bigG-14, tiny-clip-toy, or local-dir:PATH.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="open_clip weight tag or local checkpoint file (default: openai for B-32/L-14, "
            "laion2b_s32b_b79k for H-14, laion2b_s39b_b160k for bigG, the fitted toy weights "
            "for tiny-clip-toy); 'random' for none.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    quick_gelu: QuickGeluOpt = None,
    text_encoder: Annotated[
        Path | None,
        typer.Option(
            help="Text tower trained by `rtd train` (text_tower.safetensors or its folder); "
            "default: the backbone's own text tower.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="val or test (default: val; test for genecis). CIRR/CIRCO test write server "
            "files.",
            rich_help_panel=_BENCH,
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Benchmark folder in its official layout (see README), or 'hf' for the "
            "Hugging Face copies of CIRR/FashionIQ; not needed for toy.",
            rich_help_panel=_BENCH,
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="rtd: 'a photo of $ that {mod}' for every base (RTD's evaluation); base: each "
            "base repo's own prompt (Pic2Word 'a photo of * , {mod}'). Default: the style the "
            "--text-encoder was trained with, else the base's (as `rtd train`): base for "
            "pic2word, rtd for searle/lincir.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    fiq_orders: Annotated[
        str | None,
        typer.Option(
            help="FashionIQ captions: both (c1 and c2 + c2 and c1, averaged; SEARLE/LinCIR/RTD) "
            "or single (Pic2Word's c2 and c1). Default follows --prompt and --base.",
            rich_help_panel=_BENCH,
        ),
    ] = None,
    parts: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated FashionIQ categories (dress,shirt,toptee) or GeneCIS tasks "
            "(focus_attribute,change_attribute,focus_object,change_object); default all.",
            rich_help_panel=_BENCH,
        ),
    ] = None,
    toy_queries: Annotated[
        int | None,
        typer.Option(
            help="Toy benchmark: composed queries, whose targets open the gallery (default "
            f"{TOY_EVAL_QUERIES}).",
            rich_help_panel=_BENCH,
        ),
    ] = None,
    toy_distractors: Annotated[
        int | None,
        typer.Option(
            help="Toy benchmark: random images of the split added to the gallery "
            f"(default {TOY_EVAL_DISTRACTORS}).",
            rich_help_panel=_BENCH,
        ),
    ] = None,
    toy_seed: ToySeedOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per encoding batch.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="DataLoader workers decoding images (default: on CUDA every core of this "
            "process's share but one, on CPU 0)."
        ),
    ] = None,
    decode: Annotated[
        str | None,
        typer.Option(
            help="Where JPEGs are decoded: cpu (PIL in the workers, default), gpu "
            "(torchvision decode_jpeg on the CUDA device, pixels within 1/255 of PIL's; "
            "other files stay on PIL) or auto (gpu where available, else cpu)."
        ),
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
    seed: SeedOpt = 0,
    output_dir: OutputDirOpt = None,
    overwrite: OverwriteOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Score a ZS-CIR method (Pic2Word / SEARLE / LinCIR, optionally + an RTD text tower).

    --seed seeds the runtime only: scoring draws nothing, and the toy benchmark is drawn by
    --toy-seed.
    """
    args = {**locals(), "quick_gelu": on_off(quick_gelu)}
    if parts is not None:
        args["parts"] = tuple(p.strip() for p in parts.split(",") if p.strip()) or None
    cfg = resolve_eval(field_overrides(EvalConfig, args))
    if dry_run:
        print_json({"config": cfg})
        return
    # open_clip and the models load only when a command runs, so `rtd --help` stays fast
    from labshared.device import resolve_device
    from rtd_cli import evaluate
    from rtd_cli.gallery_loader import resolve_decode

    benches = []  # the benchmark as the validation read it, then scored

    def validate() -> None:
        resolve_decode(cfg.decode, resolve_device(device))  # --decode gpu needs CUDA
        benches.extend(evaluate.check_inputs(cfg))

    started = start_run(
        "rtd", "eval", cfg, version=__version__, output_dir=output_dir, overwrite=overwrite,
        device=device, precision=precision, seed=seed, validate=validate, resumable=False,
    )  # fmt: skip
    result = evaluate.run_eval(cfg, started.dir, started.runtime, benches, use_cache=not no_cache)
    if as_json:
        print_json(result)
    else:
        typer.echo(format_table(result))
    log(f"metrics: {started.dir / 'metrics.json'}")


def _cells(metrics: dict[str, float], cols: list[str], ci: dict | None = None) -> list[str]:
    """'49.60 [46.50, 52.70]': each metric with its 95 % bootstrap interval when known."""
    ci = ci or {}
    return [
        "-" if c not in metrics
        else f"{metrics[c]:.2f} [{ci[c][0]:.2f}, {ci[c][1]:.2f}]" if c in ci
        else f"{metrics[c]:.2f}"
        for c in cols
    ]  # fmt: skip


def format_table(result: dict[str, Any]) -> str:
    """The metrics of an `rtd eval` result as tables for the terminal: one row per part
    (and their average), then the toy's rows per changed attribute or CIRCO's per
    semantic aspect."""
    rows = list(result["parts"].items())
    if result["summary"] and len(rows) > 1:
        rows.append(("average", result["summary"]))
    if not rows:
        files = "\n".join(f"  {f}" for f in result["submission_files"])
        return (
            f"{result['dataset']} {result['split']}: no local metrics (test split); "
            f"server files:\n{files}"
        )
    cols = list(dict.fromkeys(k for _, m in rows for k in m))
    ci = result.get("intervals", {})
    part_ci = {**ci.get("parts", {}), "average": ci.get("summary", {})}
    if len(rows) == 1:
        part_ci[rows[0][0]] = ci.get("summary", part_ci.get(rows[0][0], {}))
    title = f"{result['dataset']} {result['split']} | base {result['base']} | prompt " + repr(
        result["prompt"]
    )
    if ci:
        b = result["bootstrap"]
        title += f" | [95 % interval: {b['n_resamples']} bootstrap resamples of the queries]"
    counts = result.get("part_queries", {})
    body = [
        [n, *_cells(m, cols, part_ci.get(n)), counts.get(n, sum(counts.values()))] for n, m in rows
    ]
    tables = [render_table(["part", *cols, "queries"], body, title=title)]
    if result.get("by_attribute"):
        counts = result.get("attribute_queries", {})
        attr_ci = ci.get("by_attribute", {})
        tables.append(render_table(
            ["by changed attribute", *cols, "queries"],
            [[a, *_cells(m, cols, attr_ci.get(a)), counts.get(a, "-")]
             for a, m in result["by_attribute"].items()],
        ))  # fmt: skip
    if result.get("semantic_aspects"):
        counts = result.get("semantic_aspect_queries", {})
        tables.append(render_table(
            ["semantic aspect", "mAP@10", "queries"],
            [[a, f"{v:.2f}", counts.get(a, "-")] for a, v in result["semantic_aspects"].items()],
        ))  # fmt: skip
    return "\n\n".join(tables)
