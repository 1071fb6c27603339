"""labshared.options: a config's fields become a command's options (issue 15 items 1, 4).

A small config and app built here exercise the mechanism itself: precedence (defaults <
preset < --config file < flags), the --config file's errors, a run header replayed (its
preset and seed), choices, switches, list flags, --help showing the preset's values, and
the declaration errors that keep a field from being silently left off the command line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labshared.cli import make_app
from labshared.config import float_list, read_config_file, split_commas
from labshared.errors import ConfigError
from labshared.options import EVAL_RUN, RunFlags, config_command, opt, quick_gelu_field

runner = CliRunner()


@dataclass(frozen=True)
class Cfg:
    name: str = ""
    steps: int = opt(10, "Optimizer steps.", panel="Training")
    lr: float = opt(0.1, "Learning rate.")
    mode: str = opt("a", "Mode: a, b or c.", choices=("a", "b", "c"))
    fast: bool = opt(False, "Go fast.", flag="--fast/--slow")
    grid: tuple[float, ...] = opt((1.0, 0.5), "C grid.", cli_type=str, parse=float_list)
    parts: tuple[str, ...] | None = opt(None, "Parts.", cli_type=str, parse=split_commas)
    data: Path | None = opt(None, "Data folder.")
    quick_gelu: bool | None = quick_gelu_field()


PRESETS = {"small": Cfg(name="small"), "big": Cfg(name="big", steps=1000, lr=0.01, fast=True)}
seen: dict = {}


def _app():
    app = make_app("toolx", "A test tool.", "0.0")

    @app.command("go")
    @config_command(Cfg, presets=PRESETS, default_preset="small", run=EVAL_RUN,
                    not_flags={"name": "the preset's own name"})  # fmt: skip
    def go(cfg: Cfg, run: RunFlags) -> None:
        """Do it."""
        seen["cfg"], seen["run"] = cfg, run

    @app.command("other")
    def other() -> None:
        """A second command, so that `go` is a subcommand."""

    return app


def _dry(*argv: str) -> dict:
    res = runner.invoke(_app(), ["go", *argv, "--dry-run"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_precedence_defaults_preset_file_flags(tmp_path):
    assert _dry()["config"]["steps"] == 10 and _dry()["preset"] == "small"
    assert _dry("--preset", "big")["config"]["steps"] == 1000
    (tmp_path / "c.json").write_text(json.dumps({"steps": 7, "lr": 0.5}))
    got = _dry("-p", "big", "--config", str(tmp_path / "c.json"), "--lr", "0.25")["config"]
    assert (got["steps"], got["lr"], got["fast"]) == (7, 0.25, True)  # file < flag; preset kept


def test_each_kind_of_flag_reaches_its_field():
    got = _dry("--steps", "3", "--mode", "c", "--fast", "--grid", "1,0.1", "--parts", "x, y",
               "--data", "d", "--quick-gelu", "on")["config"]  # fmt: skip
    want = {"name": "small", "steps": 3, "lr": 0.1, "mode": "c", "fast": True,
            "grid": [1.0, 0.1], "parts": ["x", "y"], "data": "d", "quick_gelu": True}  # fmt: skip
    assert got == want
    assert _dry("-p", "big", "--slow")["config"]["fast"] is False


def test_the_body_gets_typed_config_and_run_flags(tmp_path):
    res = runner.invoke(_app(), ["go", "--grid", "2", "--device", "cpu", "--seed", "4",
                                 "-o", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen["cfg"].grid == (2.0,) and seen["cfg"].data is None
    run = seen["run"]
    assert (run.preset, run.device, run.seed, run.output_dir) == ("small", "cpu", 4, tmp_path / "r")
    assert run.seed_for(seen["cfg"]) == 4  # Cfg has no seed field: the run-level --seed


def test_a_choice_outside_the_list_names_the_flag():
    res = runner.invoke(_app(), ["go", "--mode", "bb", "--dry-run"])
    assert res.exit_code == 1
    assert "--mode 'bb' is unknown; known: a, b, c; did you mean 'b'?" in res.output


def test_a_run_header_replays_its_preset_and_seed(tmp_path):
    header = {"tool": "toolx", "command": "go", "preset": "big",
              "config": {"name": "big", "steps": 5, "grid": [3, 1], "data": "x"},
              "runtime": {"seed": 9}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(header))
    got = _dry("--config", str(tmp_path / "config.json"))
    assert got["preset"] == "big" and got["config"]["steps"] == 5 and got["config"]["lr"] == 0.01
    res = runner.invoke(_app(), ["go", "--config", str(tmp_path / "config.json")])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].grid == (3.0, 1.0) and seen["cfg"].data == Path("x")
    assert seen["run"].seed == 9  # the run's seed, unless --seed is given
    runner.invoke(_app(), ["go", "--config", str(tmp_path / "config.json"), "--seed", "2"])
    assert seen["run"].seed == 2


@pytest.mark.parametrize(
    "text,message",
    [("{not json", "not a readable JSON file"), ("[1, 2]", "expected a JSON object"),
     ('{"stepz": 1}', "stepz are not fields of Cfg"),
     ('{"steps": "many"}', "field 'steps' expects int"),
     ('{"grid": 3}', "field 'grid' expects a list")],
)  # fmt: skip
def test_config_file_errors_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="--config .*bad.json") as err:
        read_config_file(path, Cfg)
    assert message in str(err.value)
    res = runner.invoke(_app(), ["go", "--config", str(path), "--dry-run"])
    assert res.exit_code == 1 and message in res.output


def test_help_shows_the_chosen_presets_values():
    small = runner.invoke(_app(), ["go", "--help"], terminal_width=200).output
    big = runner.invoke(_app(), ["go", "-p", "big", "--help"], terminal_width=200).output
    assert "[default: 10]" in small and "[default: 1000]" in big
    assert "--preset big" in big and "--preset small" in small
    assert "[default: fast]" in big and "[default: slow]" in small
    # the defaults shown for --help are not the values a plain run resolves with
    assert _dry()["config"]["steps"] == 10 and _dry("-p", "big")["config"]["steps"] == 1000


def test_a_field_without_a_flag_must_be_named():
    @dataclass(frozen=True)
    class Bare:
        x: int = 1

    with pytest.raises(TypeError, match="Bare.x has no flag"):
        config_command(Bare)(lambda cfg, run: None)
    with pytest.raises(TypeError, match="not fields of Bare"):
        config_command(Bare, not_flags={"y": "?"})


def test_a_tuple_field_needs_a_command_line_type():
    @dataclass(frozen=True)
    class Tup:
        xs: tuple[int, ...] = opt((1,), "Some ints.")

    with pytest.raises(TypeError, match="cli_type"):
        config_command(Tup)(lambda cfg, run: None)


def test_split_and_float_lists():
    assert split_commas(" a, ,b ") == ("a", "b") and split_commas(",") is None
    assert float_list("1, 0.5") == (1.0, 0.5)
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        float_list("1,x")
    assert dataclasses.fields(Cfg)[1].metadata["flag"].panel == "Training"
