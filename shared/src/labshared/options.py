"""Options declared once: a config field carries its own flag, and commands are built from it.

A config is a frozen dataclass whose fields say how they appear on the command line::

    @dataclass(frozen=True)
    class TrainConfig:
        steps: int = opt(2000, "Optimizer steps.", panel=TRAIN)
        gather_negatives: bool = opt(False, "All-gather negatives across ranks.",
                                     flag="--gather-negatives/--local-negatives")
        name: str = ""          # not a flag: named in the command's `not_flags`

and a command is the workflow body, with the config and the run-level flags already
resolved::

    @config_command(TrainConfig, presets=TRAIN_PRESETS, default_preset="rtd-vit-l14",
                    run=TRAINING_RUN)
    def train_cmd(cfg: TrainConfig, run: RunFlags, stop_after: StopAfterOpt = None):
        started = run.start("rtd", "train", cfg, version=__version__)

`config_command` builds the Typer signature from the fields (each `--flag` defaults to None,
"keep the preset's value"), adds the run-level options the command names, `--preset`,
`--config FILE` and `--dry-run`, and resolves: dataclass defaults < preset < config file <
flags passed (`labshared.config.resolve`). One mechanism for all three tools, so a flag can
no longer be silently dropped on its way into the config: every field is a flag unless the
command names it in `not_flags`, with the reason, and `tests/shared/test_options_walk.py`
passes every flag of every command and checks it reaches its field.

`--help` shows each option's value under the preset given on the same command line (or the
command's default preset), not a bare type: `ConfigCommand` reads `--preset` before click
prints the help. What a config is made of and needs no command line (`Flag`, `flag_name`,
`check_choices`, the `--config` reader, the list parsers) is in `labshared.config`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from labshared import cli as labcli
from labshared.config import Flag, flag_of, read_config_file, resolve, strip_none

CONFIG_PANEL = "Config"


def opt(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    panel: str | None = None,
    flag: str | tuple[str, ...] = (),
    cli_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
    choices: Iterable[Any] = (),
) -> Any:
    """A dataclass field with its flag: default, help text, help panel, and optionally the
    flag's names (`"--x/--no-x"`, a short alias), the type the command line reads when it
    differs from the field's (`cli_type`, e.g. str for a tuple) and how that value becomes
    the field's (`parse`). `choices`: the values it accepts; any other is refused with the
    one "did you mean" message (`labshared.config.unknown_name`), naming the flag."""
    decls = (flag,) if isinstance(flag, str) else tuple(flag)
    meta = {"flag": Flag(help, panel, decls, cli_type, parse, metavar, tuple(choices))}
    return dataclasses.field(default=default, metadata=meta)


def quick_gelu_field(panel: str = "CLIP") -> bool | None:
    """`--quick-gelu on|off` of a local CLIP checkpoint file (None: from the weights)."""
    return opt(None, labcli.QUICK_GELU_HELP, panel=panel, cli_type=labcli.OnOff,
               parse=labcli.on_off)  # fmt: skip


def seed_field(default: int = 0) -> int:
    """`--seed` as a config field, with the one help text of every tool."""
    return opt(default, labcli.SEED_HELP, panel="Runtime")


# --------------------------------------------------------------------------- run flags
@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The run-level flags of a command (not fields of its config), resolved."""

    preset: str | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int | None = None
    deterministic: bool = False
    output_dir: Path | None = None
    resume: bool = False
    overwrite: bool = False
    init_from: Path | None = None
    report_to: str | None = None
    no_cache: bool = False
    config_file: Path | None = None

    def seed_for(self, cfg: Any) -> int:
        """The run's seed: the config's `seed` field where it has one, else `--seed`."""
        seed = getattr(cfg, "seed", None)
        return int(seed if seed is not None else (self.seed or 0))

    def trackers(self) -> tuple[str, ...]:
        """`--report-to`'s trackers; a missing package is one red line (ConfigError)."""
        from labshared.training import parse_report_to

        return parse_report_to(self.report_to)

    def start(self, tool: str, command: str, cfg: Any, *, version: str, **kwargs: Any):
        """`labshared.launch.start_run` with these flags (so no command passes them by hand);
        `kwargs` are start_run's command-specific arguments (validate, batch_size, ...).
        `--report-to`'s packages are checked with the command's checks, before the folder."""
        from labshared.launch import start_run

        validate = kwargs.pop("validate", None)

        def check() -> None:
            self.trackers()
            if validate is not None:
                validate()

        return start_run(
            tool, command, cfg, version=version, preset=self.preset,
            output_dir=self.output_dir, resume=self.resume, overwrite=self.overwrite,
            device=self.device, precision=self.precision, seed=self.seed_for(cfg),
            deterministic=self.deterministic, init_from=self.init_from, validate=check,
            **kwargs,
        )  # fmt: skip

    def report_final(self, run_dir: Path, metrics: Mapping[str, Any], cfg: Any) -> None:
        """An evaluation's final metrics to metrics.jsonl and `--report-to`'s trackers."""
        from labshared.runs import to_jsonable
        from labshared.training import report_final

        report_final(run_dir, metrics, self.trackers(), config=to_jsonable(cfg))


#: The run-level options a command may take, declared once in `labshared.cli`.
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (labcli.DeviceOpt, "auto"),
    "precision": (labcli.PrecisionOpt, "auto"),
    "seed": (Annotated[int | None, typer.Option("--seed", help=labcli.SEED_HELP,
                                                 rich_help_panel="Runtime")], None),
    "deterministic": (labcli.DeterministicOpt, False),
    "output_dir": (labcli.OutputDirOpt, None),
    "resume": (labcli.ResumeOpt, False),
    "overwrite": (labcli.OverwriteOpt, False),
    "init_from": (labcli.InitFromOpt, None),
    "report_to": (labcli.ReportToOpt, None),
    "no_cache": (labcli.NoCacheOpt, False),
}  # fmt: skip
#: A training command's run flags; an evaluation's (no resume, no init, no trackers).
TRAINING_RUN = tuple(RUN_OPTIONS)
EVAL_RUN = ("device", "precision", "seed", "deterministic", "output_dir", "overwrite",
            "report_to", "no_cache")  # fmt: skip

ConfigFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Replay a run: its config.json (or a JSON object of config fields). Precedence: "
        "defaults < preset < this file < the flags given.",
        rich_help_panel=CONFIG_PANEL,
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the resolved config as JSON and exit (nothing is read or written).",
        rich_help_panel=CONFIG_PANEL,
    ),
]


# --------------------------------------------------------------------------- the command
@dataclasses.dataclass(frozen=True)
class ConfigSpec:
    """What `config_command` knows of a command: its config, presets and flags."""

    config_type: type
    presets: Mapping[str, Any] | None
    default_preset: str | None
    run: tuple[str, ...]
    not_flags: Mapping[str, str]
    validate: Callable[[Any], None] | None
    finish: Callable[[Any], Any] | None
    renamed: Mapping[str, str] | None
    panel: str
    preview: Callable[[Any], Mapping[str, Any]] | None = None
    start: Callable[[Mapping[str, Any]], tuple[str, Any]] | None = None

    def flag_fields(self) -> list[dataclasses.Field]:
        """The config fields that are command-line options, in declaration order."""
        return [f for f in dataclasses.fields(self.config_type) if f.name not in self.not_flags]

    def base(self, preset: str | None) -> Any:
        """The config of `preset` (or the dataclass defaults when there are no presets)."""
        if self.presets is None:
            return self.config_type()
        name = preset or self.default_preset
        return self.presets.get(name) if name in self.presets else None

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The flags given (None: not given), parsed into field values, by field name."""
        given = {}
        for f in self.flag_fields():
            value = params.get(f.name)
            flag = flag_of(f)
            if value is not None and flag is not None and flag.parse is not None:
                value = flag.parse(value)
            given[f.name] = value
        return given

    def resolve(self, params: Mapping[str, Any]) -> tuple[Any, str | None, dict[str, Any]]:
        """(config, preset, the --config file's header) from the parsed parameters."""
        file_fields, header = {}, {}
        if params.get("config_file") is not None:
            file_fields, header = read_config_file(params["config_file"], self.config_type)
        # without presets, a config field may be called `preset` (tldr generate's dataset)
        preset = params.get("preset") if self.presets is not None else None
        presets = self.presets if self.presets is not None else {"": self.config_type()}
        if self.presets is not None and preset is None:
            saved = header.get("preset")
            preset = saved if saved in self.presets else self.default_preset
            if saved not in self.presets and self.start is not None:
                preset, base = self.start(params)  # a base computed from the other flags
                presets = {preset: base}
        merged = {
            **file_fields,
            **{k: v for k, v in self.overrides(params).items() if v is not None},
        }
        cfg = resolve(presets, preset or "", merged, validate=self.validate, renamed=self.renamed)
        if self.finish is not None:
            cfg = self.finish(cfg)
        return cfg, preset, header


def field_option(config_type: type, name: str, panel: str = "Options") -> Any:
    """The Typer option (an `Annotated` type, default None: "not given") of field `name` of
    `config_type`, as the field declares it: for a command that is no config command but
    takes some of a config's fields (`check-data`), so their flags stay declared once."""
    f = next(f for f in dataclasses.fields(config_type) if f.name == name)
    flag = flag_of(f)
    if flag is None:
        raise TypeError(
            f"{config_type.__name__}.{name} has no flag (declare it with opt(...)) and is not "
            "in the command's not_flags"
        )
    hint = typing.get_type_hints(config_type)[name]
    cli_type = flag.cli_type if flag.cli_type is not None else strip_none(hint)
    if typing.get_origin(cli_type) is tuple:
        raise TypeError(f"{config_type.__name__}.{name}: give a tuple field a cli_type")
    dashed = name.replace("_", "-")
    decls = flag.decls or ((f"--{dashed}/--no-{dashed}",) if cli_type is bool else (f"--{dashed}",))
    info = typer.Option(
        *decls, help=flag.help, rich_help_panel=flag.panel or panel, metavar=flag.metavar,
        show_default=False, case_sensitive=False,
    )  # fmt: skip
    return Annotated[cli_type | None, info]


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)  # fmt: skip


def config_command(
    config_type: type,
    *,
    presets: Mapping[str, Any] | None = None,
    default_preset: str | None = None,
    run: Iterable[str] = (),
    not_flags: Mapping[str, str] | None = None,
    validate: Callable[[Any], None] | None = None,
    finish: Callable[[Any], Any] | None = None,
    renamed: Mapping[str, str] | None = None,
    panel: str = "Options",
    preview: Callable[[Any], Mapping[str, Any]] | None = None,
    start: Callable[[Mapping[str, Any]], tuple[str, Any]] | None = None,
):
    """Decorator: a command body `fn(cfg, run, **own options)` becomes a Typer command whose
    options are the config's fields, the named run-level options, `--preset` (with
    presets), `--config` and `--dry-run`. The body's own keyword parameters (Annotated
    Typer options) are kept as they are: options that are neither fields nor run flags.

    Args:
        config_type: the frozen dataclass; its fields carry their flags (`opt`).
        presets, default_preset: name -> complete config, and the preset without --preset.
        run: names from `RUN_OPTIONS`.
        not_flags: field -> why it is not an option (a preset's name, a derived value).
        validate: checks of the resolved config (ConfigError naming the flag).
        finish: completes a resolved config (defaults that depend on other fields).
        renamed: old preset name -> its replacement, for a clear message.
        panel: the help panel of fields that name none.
        preview: what `--dry-run` prints besides the config (`tldr generate`: the first
            request of every list); its keys are added to, or replace, the JSON's.
        start: without --preset (nor a --config file's preset): (name, config) to start
            from, computed from the parsed parameters, in place of default_preset's (robattr
            train: the paper preset of --dataset/--model, or on --resume the run's own
            config). `--help` still shows default_preset's values.
    """
    run = tuple(run)
    unknown = sorted(set(run) - set(RUN_OPTIONS))
    if unknown:
        raise TypeError(f"unknown run options {unknown}; known: {sorted(RUN_OPTIONS)}")
    spec = ConfigSpec(
        config_type, presets, default_preset, run, dict(not_flags or {}), validate, finish,
        renamed, panel, preview, start,
    )  # fmt: skip
    field_names = {f.name for f in dataclasses.fields(config_type)}
    stale = sorted(set(spec.not_flags) - field_names)
    if stale:
        raise TypeError(f"not_flags names {stale}, which are not fields of {config_type.__name__}")

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        params: list[inspect.Parameter] = []
        if presets is not None:
            # None, not the default preset: a --config file's preset applies unless given
            params.append(_keyword("preset", labcli.PresetOpt, None))
        # a config that records its preset's name in a field `preset` (robattr train): that
        # field's flag is --preset itself, declared once above
        params += [_keyword(f.name, field_option(config_type, f.name, panel), None)
                   for f in spec.flag_fields()
                   if not (presets is not None and f.name == "preset")]  # fmt: skip
        own = list(inspect.signature(body).parameters.values())[2:]
        # resolved in the body's own module (which may use `from __future__ import annotations`)
        own_hints = typing.get_type_hints(body, include_extras=True)
        for p in own:
            hint = own_hints.get(p.name, p.annotation)
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint))
        taken = {p.name for p in params}
        for name in run:
            if name == "seed" and "seed" in field_names:
                continue  # the config's own `seed` field is the flag
            if name in taken:
                raise TypeError(f"{body.__name__}: option {name!r} is declared twice")
            annotation, default = RUN_OPTIONS[name]
            params.append(_keyword(name, annotation, default))
        params.append(_keyword("config_file", ConfigFileOpt, None))
        params.append(_keyword("dry_run", DryRunOpt, False))
        own_names = [p.name for p in own]

        @functools.wraps(body)
        def command(**kwargs: Any) -> Any:
            cfg, preset, header = spec.resolve(kwargs)
            if kwargs.get("dry_run"):
                extra = spec.preview(cfg) if spec.preview is not None else {}
                labcli.print_json({"preset": preset, "config": cfg, **extra})
                return None
            flags = {k: kwargs[k] for k in run if k in kwargs}
            if kwargs.get("seed") is None and "seed" in flags:
                flags["seed"] = header.get("runtime", {}).get("seed")  # replay the run's seed
            runflags = RunFlags(preset=preset, config_file=kwargs.get("config_file"), **flags)
            return body(cfg, runflags, **{k: kwargs[k] for k in own_names})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # Typer must read the built signature, not the body's
        command.config_spec = spec  # type: ignore[attr-defined]
        command.command_class = type("ConfigCommand", (ConfigCommand,), {"spec": spec})  # type: ignore[attr-defined]
        return command

    return decorate


class ConfigCommand(TyperCommand):
    """A Typer command whose `--help` shows each field's value under the chosen preset."""

    spec: ConfigSpec

    def parse_args(self, ctx, args):  # noqa: ANN001 - click's signature
        """Click's parsing; before it, `--help` gets the preset's values as defaults."""
        if any(a in ctx.help_option_names for a in args):
            self._show_preset_values(_preset_in(args))
        return super().parse_args(ctx, args)

    def _show_preset_values(self, preset: str | None) -> None:
        """Only for `--help` (which exits before anything runs): each field's default
        becomes its value under the preset, so the help shows it; without --help the
        defaults stay None, "not given"."""
        base = self.spec.base(preset)
        if base is None:
            return  # an unknown preset: resolve() names it when the command runs
        names = {f.name for f in self.spec.flag_fields()}
        for param in self.params:
            if param.name == "preset":
                param.default, param.show_default = self.spec.default_preset, True
            if param.name in names:
                param.default = getattr(base, param.name)
                param.show_default = True
        if self.spec.presets is not None:
            shown = preset or self.spec.default_preset
            self.help = (self.help or "") + (
                f"\n\nThe defaults shown are those of --preset {shown} "
                "(`--preset NAME --help` shows another's)."
            )


def _preset_in(args: list[str]) -> str | None:
    """The value of `--preset` / `-p` in raw arguments (None when absent)."""
    for i, arg in enumerate(args):
        if arg in ("--preset", "-p") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None
