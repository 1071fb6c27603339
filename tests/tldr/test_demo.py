"""`python -m tldr_cli.demo` (the `make demo-tldr` target): where its runs go, the argv of
each step (each must resolve through the app), and a small run end to end (slow)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tldr_cli import demo
from tldr_cli.cli import app
from tldr_cli.demo import DemoConfig, default_out, demo_commands

SMALL = {
    "filter_args": ("--toy-n-train", "200"),
    "retrain_args": ("--toy-n-train", "200", "--toy-n-val", "40", "--toy-n-test", "40"),
}


def test_each_toy_seed_has_its_own_run_folder_and_each_step_reads_the_previous():
    assert default_out(0) == Path("runs/tldr/demo/seed-0")
    assert default_out(3) == Path("runs/tldr/demo/seed-3")
    out = Path("o")
    steps = dict(demo_commands(DemoConfig(toy_seed=3, device="cpu"), out))
    assert list(steps) == ["generate", "filter", "retrain"]
    for name in ("filter", "retrain"):
        argv = steps[name]
        assert argv[argv.index("--toy-seed") + 1] == "3"
        assert argv[argv.index("-o") + 1] == str(out / name)
    assert steps["filter"][steps["filter"].index("--words") + 1] == str(
        out / "generate" / "wordlists.json"
    )
    assert steps["retrain"][steps["retrain"].index("--words") + 1] == str(
        out / "filter" / "wordlists.json"
    )


def test_every_step_resolves_through_the_app():
    """The demo's argv are real commands: each dry-run resolves the toy seed and sizes."""
    cfg = DemoConfig(toy_seed=5, **SMALL)
    for name, argv in demo_commands(cfg, Path("o")):
        result = CliRunner().invoke(app, [*argv, "--dry-run"])
        assert result.exit_code == 0, (name, result.output)
        config = json.loads(result.stdout)["config"]
        if name != "generate":
            assert config["toy_seed"] == 5 and config["toy_n_train"] == 200, name


def test_main_runs_into_the_seed_folder(tmp_path, monkeypatch):
    seen = {}

    def fake_run_demo(cfg, out):
        seen["cfg"], seen["out"] = cfg, out
        Path(out).mkdir(parents=True)
        (Path(out) / demo.TABLE).write_text("table\n")
        return {"gain_worst_group": 0.5}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert demo.main(["--toy-seed", "2"]) == 0
    assert seen["out"] == Path("runs/tldr/demo/seed-2")
    assert seen["cfg"] == DemoConfig(toy_seed=2, device="cpu")
    assert demo.main(["--toy-seed", "1", "--out", str(tmp_path / "x")]) == 0
    assert seen["out"] == tmp_path / "x"


@pytest.mark.slow
def test_a_small_demo_runs_end_to_end(tmp_path):
    result = demo.run_demo(DemoConfig(toy_seed=0, **SMALL), tmp_path)
    assert set(result["test"]) == {"ERM", "TLDR", "DFR"}
    table = (tmp_path / demo.TABLE).read_text()
    assert "worst-group (%)" in table and "TLDR - ERM worst-group" in table
    assert json.loads((tmp_path / "demo.json").read_text())["test"] == result["test"]
