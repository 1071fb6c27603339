"""Every tool answers --help and --version, and our errors print as one red line."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from labshared.cli import make_app
from labshared.errors import ConfigError

TOOLS = [("rtd", "rtd_cli"), ("tldr", "tldr_cli"), ("robattr", "robattr_cli")]

#: A hang guard for subprocess runs, not a speed requirement (no test asserts speed).
HANG_GUARD_S = 900


@pytest.mark.parametrize("name,module", TOOLS)
def test_help_and_version(name, module):
    import importlib

    cli = importlib.import_module(f"{module}.cli")
    version = importlib.import_module(module).__version__
    runner = CliRunner()
    res = runner.invoke(cli.app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"{name} {version}"
    res = runner.invoke(cli.app, ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


@pytest.mark.parametrize("name,module", TOOLS)
def test_python_dash_m_works(name, module):
    out = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert out.returncode == 0 and out.stdout.startswith(name)


def test_lab_errors_become_one_line_and_exit_1():
    app = make_app("demo", "demo app", "0.0")

    @app.command()
    def boom() -> None:
        raise ConfigError("--eps -1: expected a positive number of pixels/255")

    @app.command()
    def ok() -> None:
        print("fine")

    res = CliRunner().invoke(app, ["boom"])
    assert res.exit_code == 1
    assert "error:" in res.output and "--eps -1" in res.output and "Traceback" not in res.output


def test_preset_option_is_declared_once_with_a_short_alias():
    """`--preset` / `-p` mean the same in every tool; a command chooses its own default."""
    from labshared.cli import PresetOpt

    app = make_app("demo", "demo app", "0.0")

    @app.command()
    def run(preset: PresetOpt = "toy") -> None:
        print(f"preset={preset}")

    @app.command()
    def other() -> None:
        pass

    runner = CliRunner()
    assert runner.invoke(app, ["run"]).output.strip() == "preset=toy"
    assert runner.invoke(app, ["run", "-p", "paper"]).output.strip() == "preset=paper"
    assert runner.invoke(app, ["run", "--preset", "paper"]).output.strip() == "preset=paper"
