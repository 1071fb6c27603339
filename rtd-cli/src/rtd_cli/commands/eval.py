"""`rtd eval`: the `EvalConfig` fields are the options; the work is `rtd_cli.evaluate`'s
`check` and `run`; the metrics table it prints is `format_table`."""

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from labshared.cli import print_json
from labshared.console import log, render_table
from labshared.options import RunFlags, config_command
from rtd_cli import __version__
from rtd_cli.config import DEFAULT_BACKBONE, PROMPT_STYLES, TOY_BACKBONE, EvalConfig, validate_eval

JsonOpt = Annotated[bool, typer.Option("--json", help="Print metrics as JSON instead of a table.")]

#: eval's run-level options (`labshared.options.EVAL_RUN` less --deterministic: scoring
#: draws nothing).
RUN_FLAGS = ("device", "precision", "seed", "output_dir", "overwrite", "report_to", "no_cache")


def default_prompt_style(base: str, tower_config: Mapping[str, Any] | None = None) -> str:
    """The prompt style `rtd eval` uses when `--prompt` is not given: the one the
    `--text-encoder` was trained with (`tower_config`, from `read_text_tower_config`),
    else the base's default, the one `rtd train` uses too (`projection.default_prompt_style`:
    `base` for Pic2Word's "a photo of * , {mod}", `rtd` for SEARLE/LinCIR)."""
    from rtd_cli.projection import default_prompt_style as base_default

    fallback = base_default(base)
    style = (tower_config or {}).get("prompt_style", fallback)
    return style if style in PROMPT_STYLES else fallback


def finish_eval(cfg: EvalConfig) -> EvalConfig:
    """Complete a resolved config: the backbone (the tiny CLIP for the toy benchmark, else
    ViT-B-32) and, without `--prompt`, the style the `--text-encoder` was trained with (or
    the base's). The tower file is read whole here, so a truncated or foreign one is one
    error naming it before any model or image loads."""
    from rtd_cli.tower_file import read_text_tower_config

    if cfg.backbone is None:
        backbone = TOY_BACKBONE if cfg.dataset == "toy" else DEFAULT_BACKBONE
        cfg = dataclasses.replace(cfg, backbone=backbone)
    if cfg.prompt is None:
        tower = read_text_tower_config(cfg.text_encoder) if cfg.text_encoder else None
        cfg = dataclasses.replace(cfg, prompt=default_prompt_style(cfg.base, tower))
    return cfg


@config_command(EvalConfig, run=RUN_FLAGS, validate=validate_eval, finish=finish_eval)
def eval_cmd(cfg: EvalConfig, run: RunFlags, as_json: JsonOpt = False) -> None:
    """Score a ZS-CIR method (Pic2Word / SEARLE / LinCIR, optionally + an RTD text tower).

    --seed seeds the runtime only (the bootstrap intervals): scoring draws nothing, and the
    toy benchmark is drawn by --toy-seed. `rtd check-data` checks a data layout alone.
    """
    # open_clip and the models load only when a command runs, so `rtd --help` stays fast
    from rtd_cli import evaluate

    benches = []  # the benchmark as the check read it, then scored

    started = run.start(
        "rtd", "eval", cfg, version=__version__, resumable=False,
        validate=lambda: benches.extend(evaluate.check(cfg, run.device)),
    )  # fmt: skip
    result = evaluate.run(cfg, started.dir, started.runtime, benches, use_cache=not run.no_cache)
    run.report_final(started.dir, result, cfg)
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
