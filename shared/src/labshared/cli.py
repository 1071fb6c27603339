"""CLI conventions shared by rtd, tldr and robattr: options declared once, one error style.

Use the `Annotated` aliases below in every command so a flag means the same thing in all
three tools (lighteval's `cli_args.py` pattern)::

    @app.command()
    def train(device: DeviceOpt = "auto", precision: PrecisionOpt = "auto",
              seed: SeedOpt = 0, output_dir: OutputDirOpt = None, ...):

and build each app with `make_app(...)`: its commands print our own errors (`LabError`)
as one red line on stderr and exit 1; other errors keep their traceback.
"""

import functools
import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from labshared import invocation
from labshared.console import console
from labshared.errors import LabError

DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to run: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.",
        rich_help_panel="Runtime",
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="Autocast precision: auto (bf16 on GPUs that support it, fp16 with loss "
        "scaling on older GPUs, fp32 on CPU), fp32 (strict: TF32 off), tf32 (fp32 with TF32 "
        "matmuls and convolutions on Ampere and newer), bf16 or fp16.",
        rich_help_panel="Runtime",
    ),
]
SEED_HELP = "Random seed (each torchrun rank adds its rank)."
SeedOpt = Annotated[int, typer.Option("--seed", help=SEED_HELP, rich_help_panel="Runtime")]
DeterministicOpt = Annotated[
    bool,
    typer.Option(
        "--deterministic/--no-deterministic",
        help="Ask torch for deterministic kernels (slower).",
        rich_help_panel="Runtime",
    ),
]
OutputDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        help="Run folder (default runs/<tool>/<command>/<timestamp>). A non-empty folder "
        "needs --resume or --overwrite.",
        rich_help_panel="Run folder",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --output-dir from its latest checkpoint.",
        rich_help_panel="Run folder",
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Delete the run in --output-dir and start again (only a run folder of these "
        "tools: never other files, nor a folder holding other runs).",
        rich_help_panel="Run folder",
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        "-p",
        help="A complete, runnable setting (the command's help lists them); every other flag "
        "given overrides one of its fields.",
        rich_help_panel="Config",
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Recompute instead of reading the shared cache (frozen features; for tldr "
        "generate, LLM replies).",
        rich_help_panel="Runtime",
    ),
]


InitFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--init-from",
        help="Start a NEW run from the weights of a run folder (its latest checkpoint), a "
        "checkpoint folder or a model.safetensors file: to train longer or to fine-tune. "
        "Optimizer and schedule start fresh; the header records the source.",
        rich_help_panel="Run folder",
    ),
]
ReportToOpt = Annotated[
    str | None,
    typer.Option(
        "--report-to",
        help="Also send the logged steps (always in <run>/metrics.jsonl) to: tensorboard "
        "(<run>/tensorboard/), wandb (offline unless WANDB_MODE/WANDB_API_KEY say otherwise), "
        "or both, comma-separated. Default none.",
        rich_help_panel="Run folder",
    ),
]


# The options of the three `compare` commands (labshared.compare): the same names, defaults
# and meaning in every tool.
IntersectOpt = Annotated[
    bool,
    typer.Option(
        "--intersect",
        help="Compare on the items (queries, images) every run scored, when the runs scored "
        "different ones (without it, such runs are refused, naming the difference).",
    ),
]
BootstrapSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resamples.")]
ResamplesOpt = Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")]


class OnOff(str, Enum):
    """The values of an on/off flag (`--quick-gelu on|off`)."""

    on = "on"
    off = "off"


QUICK_GELU_HELP = (
    "Activation of a local CLIP checkpoint file: on (QuickGELU, all OpenAI weights) or off "
    "(GELU). Default: from the tag's open_clip config, else the file's <file>.clip.json "
    "record (written the first time this flag is given)."
)
QuickGeluOpt = Annotated[
    OnOff | None,
    typer.Option(
        "--quick-gelu",
        help=QUICK_GELU_HELP,
        case_sensitive=False,
        rich_help_panel="CLIP",
    ),
]


def on_off(value: OnOff | str | None) -> bool | None:
    """`--quick-gelu on|off|<absent>` -> True / False / None."""
    return None if value is None else OnOff(value) is OnOff.on


class _RecordingGroup(TyperGroup):
    """Typer's group, remembering the arguments `main` was given (labshared.invocation):
    in-process calls (demos, CliRunner) pass their own list, not `sys.argv`."""

    def main(self, args=None, *rest, **kwargs):
        with invocation.recording(args):
            return super().main(args, *rest, **kwargs)


class LabTyper(typer.Typer):
    """A Typer whose commands print our own errors (LabError) as one red line, exit 1."""

    def command(self, *args, **kwargs):
        """Typer's `command` decorator, with the function wrapped by `guard`; a command
        built by `labshared.options.config_command` gets its help-aware command class."""

        def register(fn):
            cls = kwargs.get("cls") or getattr(fn, "command_class", None)
            return super(LabTyper, self).command(*args, **{**kwargs, "cls": cls})(guard(fn))

        return register


#: Every tool's app: `--help` on a bare call, no local-variable dumps in tracebacks (an
#: API key may be in scope), no shell-completion commands, rich markup in help texts.
APP_SETTINGS = {"no_args_is_help": True, "pretty_exceptions_show_locals": False,
                "add_completion": False, "rich_markup_mode": "rich"}  # fmt: skip


def make_app(name: str, help: str, version: str, commands=None) -> typer.Typer:
    """A Typer app with `--version` and `APP_SETTINGS`; `commands`: name -> command
    function, registered in that order (a tool's `cli.py` is only this call)."""
    app = LabTyper(cls=_RecordingGroup, name=name, help=help, **APP_SETTINGS)
    for command_name, fn in (commands or {}).items():
        app.command(command_name)(fn)

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {version}")
            raise typer.Exit()

    version_opt = typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit."
    )

    # No `from __future__ import annotations` in this module: Typer resolves annotations
    # at registration time, and this local callback must be a real object, not a string.
    @app.callback()
    def _root(version_: Annotated[bool, version_opt] = False) -> None:
        pass

    _root.__doc__ = help
    return app


def run_in_process(app: typer.Typer, tool: str, argv: list[str]) -> None:
    """Run one command of `app` in this process, as the console script would (the demos'
    steps). The app records `argv`, not the demo's own `sys.argv`, as the run's command line.

    Raises:
        ConfigError: the command exited with a non-zero code (its error is printed).
    """
    import shlex

    from labshared.errors import ConfigError

    code = typer.main.get_command(app).main(args=argv, prog_name=tool, standalone_mode=False)
    if code not in (None, 0):
        raise ConfigError(f"`{tool} {shlex.join(argv)}` failed with exit code {code}")


def run_steps(app: typer.Typer, tool: str, steps) -> dict[str, dict[str, float]]:
    """Run a demo's `steps` ((name, argv) pairs) in order in this process, each logged as
    `$ tool argv`; returns each step's wall and CPU seconds (the demos' cost tables)."""
    import shlex
    import time

    from labshared.console import log

    cost = {}
    for name, argv in steps:
        log(f"[bold]$ {tool} {shlex.join(argv)}[/bold]")
        wall, cpu = time.perf_counter(), time.process_time()
        run_in_process(app, tool, argv)
        cost[name] = {"wall_s": round(time.perf_counter() - wall, 1),
                      "cpu_s": round(time.process_time() - cpu, 1)}  # fmt: skip
    return cost


def run_app(app: typer.Typer) -> None:
    """Entry point body: run `app`, turning LabError into one red line and exit 1."""
    try:
        app(standalone_mode=True)
    except LabError as exc:  # raised outside a command body (rare)
        raise SystemExit(_report(exc)) from None


def _report(exc: LabError) -> int:
    """Print `exc` as one line; its `exit_code` (1 unless the error sets another: 0 for a
    finished run on --resume, 130/143 for an interrupted one) is the process's."""
    code = int(getattr(exc, "exit_code", 1))
    label = "[bold red]error:[/bold red]" if code == 1 else "[bold yellow]note:[/bold yellow]"
    console.print(f"{label} {exc}", highlight=False, soft_wrap=True)
    return code


def print_json(obj) -> None:
    """A command's machine-readable result on stdout (logs go to stderr)."""
    from labshared.runs import to_jsonable

    typer.echo(json.dumps(to_jsonable(obj), indent=2))


def guard(fn):
    """Decorator for command bodies: our own errors become one red line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LabError as exc:
            raise typer.Exit(_report(exc)) from None

    return wrapper
