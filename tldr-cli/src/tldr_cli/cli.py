"""The `tldr` command line: wiring only; each command's work lives in its own module."""

from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import OutputDirOpt, OverwriteOpt, ResumeOpt, make_app, run_app
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


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
