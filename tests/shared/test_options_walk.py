"""Every option of every command reaches its config field (issue 15 item 1).

The walk covers the three apps: each command that resolves a config is built by
`labshared.options.config_command` (a `ConfigCommand`); each of its config fields is a flag
or is named, with the reason, in the command's `not_flags`; and passing each flag alone
(with the command's required flags) either shows the value in the `--dry-run` config or is
refused by a check that names that very flag. So a flag can no longer be declared and then
dropped on its way into the config.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from labshared.cli import OnOff
from labshared.config import flag_name, flag_of, strip_none
from labshared.options import ConfigCommand

runner = CliRunner()

#: Commands that resolve no config and start no run: they read runs or data folders.
NOT_CONFIG_COMMANDS = {("rtd", "compare"), ("rtd", "check-data"), ("tldr", "compare"),
                       ("tldr", "check-data"), ("robattr", "compare")}  # fmt: skip

#: The flags each command needs before its dry-run resolves.
REQUIRED: dict[tuple[str, str], list[str]] = {
    ("rtd", "train"): ["--preset", "toy", "--phi", "p.pt"],
    ("rtd", "train-phi"): ["--preset", "toy"],
    ("rtd", "eval"): ["--dataset", "toy", "--phi", "p.pt"],
    ("tldr", "generate"): ["--preset", "toy", "--model", "m"],
    ("tldr", "filter"): ["--words", "w.json"],
    ("tldr", "retrain"): ["--preset", "toy"],
    ("tldr", "erm"): ["--preset", "toy"],
    ("robattr", "train"): [],
    ("robattr", "attack"): ["--checkpoint", "run/train"],
    ("robattr", "eval"): ["--checkpoint", "run/train"],
}


def _apps() -> dict[str, typer.Typer]:
    from robattr_cli.cli import app as robattr_app
    from rtd_cli.cli import app as rtd_app
    from tldr_cli.cli import app as tldr_app

    return {"rtd": rtd_app, "tldr": tldr_app, "robattr": robattr_app}


def _commands():
    for tool, app in _apps().items():
        group = typer.main.get_command(app)
        for name, command in group.commands.items():
            yield tool, name, app, command


ALL = [(t, n) for t, n, _, _ in _commands()]


@pytest.mark.parametrize("tool,name", ALL, ids=[f"{t}-{n}" for t, n in ALL])
def test_every_command_resolves_its_config_through_one_mechanism(tool, name):
    command = dict(((t, n), c) for t, n, _, c in _commands())[(tool, name)]
    if (tool, name) in NOT_CONFIG_COMMANDS:
        assert not isinstance(command, ConfigCommand)
        return
    assert isinstance(command, ConfigCommand), f"{tool} {name} does not use config_command"
    spec = command.spec
    params = {p.name for p in command.params}
    for f in dataclasses.fields(spec.config_type):
        if f.name in spec.not_flags:
            assert spec.not_flags[f.name], f"{f.name}: say why it is not a flag"
            assert f.name not in params
        else:
            assert flag_of(f) is not None and flag_of(f).help, f"{f.name}: no help"
            assert f.name in params
    assert {"config_file", "dry_run"} <= params


def _probe(spec, f, base_value):
    """(argv for the flag, the field value it must produce)."""
    flag = flag_of(f)
    hint = strip_none(typing.get_type_hints(spec.config_type)[f.name])
    cli_type = flag.cli_type if flag.cli_type is not None else hint
    name = flag_name(f)
    if cli_type is bool:
        decl = (flag.decls or (f"{name}/--no-{name[2:]}",))[0]
        on, off = decl.split("/") if "/" in decl else (decl, None)
        return ([off] if base_value else [on]), not base_value
    if cli_type is OnOff:
        return [name, "off" if base_value else "on"], not base_value
    if flag.choices:
        other = next(c for c in flag.choices if c != base_value)
        return [name, str(other)], other
    if cli_type is int:
        value = (base_value or 0) + 3
        return [name, str(value)], value
    if cli_type is float:
        value = (base_value or 0.0) + 0.25
        return [name, str(value)], value
    if cli_type is Path:
        return [name, "probe.file"], Path("probe.file")
    if hint is not str and flag.parse is not None:  # a list flag (tuple field)
        return [name, "1,2"], flag.parse("1,2")
    return [name, "probe-value"], "probe-value"


CONFIG_COMMANDS = [(t, n) for t, n in ALL if (t, n) not in NOT_CONFIG_COMMANDS]


@pytest.mark.parametrize("tool,name", CONFIG_COMMANDS,
                         ids=[f"{t}-{n}" for t, n in CONFIG_COMMANDS])  # fmt: skip
def test_every_flag_reaches_its_field(tool, name):
    app, command = {(t, n): (a, c) for t, n, a, c in _commands()}[(tool, name)]
    assert (tool, name) in REQUIRED, f"add the required flags of {tool} {name} to REQUIRED"
    required = REQUIRED[(tool, name)]
    base = runner.invoke(app, [name, *required, "--dry-run"])
    assert base.exit_code == 0, base.output
    base_cfg = json.loads(base.stdout)["config"]
    spec = command.spec
    reached = 0
    for f in spec.flag_fields():
        argv, expected = _probe(spec, f, _field_value(spec, f, base_cfg))
        res = runner.invoke(app, [name, *required, *argv, "--dry-run"])
        if res.exit_code == 0:
            got = json.loads(res.stdout)["config"][f.name]
            assert got == json.loads(json.dumps(_jsonable(expected))), (f.name, argv, got)
            reached += 1
        else:  # refused: by a check that names this flag (so the value did reach it)
            assert flag_name(f) in res.output, (f.name, argv, res.output)
    assert reached >= len(spec.flag_fields()) // 2, "most probes should resolve"


def _field_value(spec, f, base_cfg):
    value = base_cfg[f.name]
    return tuple(value) if isinstance(value, list) else value


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
