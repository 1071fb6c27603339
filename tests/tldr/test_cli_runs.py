"""How every tldr command starts its run (`labshared.launch.start_run`): a config that fails
its checks (unknown name, missing file, bad combination of flags) leaves no run folder, so
the corrected command with the same `-o` just works; one header; the one resume rule; and
every flag sets the config field of its own name. The heavy work is replaced by a recorder
(the config it receives is asserted), as fastapi-cli tests its commands."""

import dataclasses
import json

import pytest
import typer
from typer.testing import CliRunner

import tldr_cli.erm
import tldr_cli.filter
import tldr_cli.retrain
from labshared.launch import read_header
from labshared.options import RUN_OPTIONS
from tldr_cli import __version__
from tldr_cli.cli import app
from tldr_cli.config import GenerateConfig, TLDRConfig
from tldr_cli.wordimport import builtin_path

WORDS = str(builtin_path("toy"))
CPU = ["--device", "cpu"]


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(args, out, message):
    """The command fails with one red line holding `message`, and makes no folder."""
    result = invoke([*args, "-o", out])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    assert not out.exists()


@pytest.fixture
def seen(monkeypatch):
    """Record the config each command's workflow receives instead of running it."""
    calls = {}

    def fake_filter(cfg, runtime, run_dir, *, use_cache):
        calls["filter"] = cfg
        empty = {"classes": {}, "spurious": {}}
        summary = {"before": empty, "after": empty, "removed_stage1": 0, "removed_stage2": 0}
        return run_dir / "wordlists.json", summary, []

    def fake_retrain(cfg, runtime, run_dir, *, use_cache, **_):
        calls["retrain"] = cfg
        return {}, "table"

    def fake_erm(cfg, runtime, run_dir, *, resume, use_cache, **_):
        calls["erm"] = (cfg, resume)
        return {"worst_group_acc": 0.5, "average_acc": 0.5, "class_balanced_acc": 0.5}, "table"

    monkeypatch.setattr(tldr_cli.filter, "run", fake_filter)
    monkeypatch.setattr(tldr_cli.retrain, "run", fake_retrain)
    monkeypatch.setattr(tldr_cli.erm, "run", fake_erm)
    return calls


def test_generate_refuses_before_making_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "gen"
    refused(["generate", "--offline-toy", "--preset", "toyy"], out, "did you mean 'toy'")
    refused(["generate", "--offline-toy", "--prompts", tmp_path / "no.toml"], out, "not found")
    refused(["generate", "--preset", "toy", "--model", "gpt-4o-mini"], out, "OPENAI_API_KEY")
    result = invoke(["generate", "--offline-toy", "-o", out])
    assert result.exit_code == 0, result.output
    header = read_header(out)
    assert {k: header[k] for k in ("tool", "command", "version", "preset")} == {
        "tool": "tldr", "command": "generate", "version": __version__, "preset": "toy"
    }  # fmt: skip
    assert header["config"]["from_file"] == ["builtin:toy"] and header["runtime"]["seed"] == 0


def test_generate_resume_refuses_a_changed_request_but_not_a_retry_knob(tmp_path, monkeypatch):
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "gen"
    assert invoke(["generate", "--offline-toy", "-o", out]).exit_code == 0
    result = invoke(["generate", "--offline-toy", "--target", "5", "-o", out, "--resume"])
    assert result.exit_code == 1 and "target: saved 200, now 5" in result.output
    again = ["--max-retries", "9", "--timeout", "5", "--show-prompts", "--resume"]
    result = invoke(["generate", "--offline-toy", "-o", out, *again])
    assert result.exit_code == 0, result.output
    assert len(read_header(out)["resumed_at"]) == 1
    assert read_header(out)["config"]["max_retries"] == 5  # the header keeps the start


def test_filter_missing_words_leaves_no_folder_then_the_corrected_run_starts(tmp_path, seen):
    out = tmp_path / "filter"
    refused(["filter", "--words", tmp_path / "none.json", *CPU], out, "word-list file not found")
    refused(["filter", "--words", WORDS, "--gap-pairs", tmp_path / "coco", *CPU], out, "coco")
    refused(["filter", "--words", WORDS, "--classifier", tmp_path / "m.pt", *CPU], out, "m.pt")
    refused(["filter", "--words", WORDS, "--dataset", "waterbirds", *CPU], out, "--data-root")
    result = invoke(["filter", "--words", WORDS, *CPU, "--ridge-lambda", "2", "-o", out])
    assert result.exit_code == 0, result.output
    assert seen["filter"].words.name == "toy_words.json" and seen["filter"].ridge_lambda == 2.0
    header = read_header(out)
    assert header["command"] == "filter" and header["config"]["ridge_lambda"] == 2.0
    assert header["config"]["words"] == WORDS


def test_word_lists_naming_other_classes_leave_no_folder(tmp_path, seen):
    """The lists are matched to the dataset's class names before the folder is made."""
    wl = json.loads(builtin_path("toy").read_text())
    wl["classes"]["huge digit"] = wl["classes"].pop("large digit")
    wl["anchors"]["classes"]["huge digit"] = wl["anchors"]["classes"].pop("large digit")
    misnamed = tmp_path / "misnamed.json"
    misnamed.write_text(json.dumps(wl))
    for command in ("filter", "retrain"):
        out = tmp_path / command
        refused([command, "--words", misnamed, *CPU], out, "huge digit")
        assert invoke([command, "--words", WORDS, *CPU, "-o", out]).exit_code == 0


def test_retrain_bad_combination_leaves_no_folder_then_the_corrected_run_starts(tmp_path, seen):
    out = tmp_path / "retrain"
    refused(["retrain", "--method", "tldr", *CPU], out, "--method tldr needs --words")
    refused(["retrain", "--method", "tdlr", *CPU], out, "--method 'tdlr'")
    refused(["retrain", "--preset", "toyy", *CPU], out, "did you mean 'toy'")
    empty = tmp_path / "empty.json"
    wl = json.loads(builtin_path("toy").read_text())
    wl["classes"]["large digit"] = []
    empty.write_text(json.dumps(wl))
    refused(["retrain", "--words", empty, *CPU], out, "['classes.large digit'] are empty")
    head = ["--head-epochs", "3", "--head-lr", "0.5", "--head-weight-decay", "0.25"]
    result = invoke(["retrain", "--method", "dfr", *head, *CPU, "-o", out])
    assert result.exit_code == 0, result.output
    cfg = seen["retrain"]
    assert (cfg.method, cfg.head_epochs, cfg.head_lr, cfg.head_weight_decay) == (
        "dfr", 3, 0.5, 0.25
    )  # fmt: skip
    assert read_header(out)["config"]["method"] == "dfr"


def test_erm_unknown_dataset_leaves_no_folder_and_resume_follows_the_one_rule(tmp_path, seen):
    out = tmp_path / "erm"
    refused(["erm", "--dataset", "waterbird", *CPU], out, "did you mean 'waterbirds'")
    refused(["erm", "--erm-recipe", "dfr-waterbird", *CPU], out, "did you mean 'dfr-waterbirds'")
    refused(["erm", "--dataset", "celeba", "--data-root", tmp_path / "x", *CPU], out, "x")
    result = invoke(["erm", "--erm-recipe", "paper-repo", "--toy-n-train", "64", *CPU, "-o", out])
    assert result.exit_code == 0, result.output
    assert seen["erm"][0].erm_recipe == "paper-repo" and seen["erm"][1] is False
    resume = ["erm", "--erm-recipe", "paper-repo", *CPU, "-o", out, "--resume"]
    result = invoke([*resume, "--toy-n-train", "80"])
    assert result.exit_code == 1 and "toy_n_train: saved 64, now 80" in result.output
    result = invoke([*resume, "--toy-n-train", "64", "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert seen["erm"][1] is True  # a run-time knob may change on resume


#: What every command has besides its config's fields and the run options.
COMMAND_OPTIONS = {"preset", "config_file", "dry_run"}


def test_every_flag_sets_the_config_field_of_its_own_name():
    """Parameters of every command are config fields (or the shared run options)."""
    command = typer.main.get_command(app)
    fields = {
        "generate": {f.name for f in dataclasses.fields(GenerateConfig)},
        **{
            name: {f.name for f in dataclasses.fields(TLDRConfig)}
            for name in ("filter", "retrain", "erm", "check-data")
        },
    }
    for name, sub in command.commands.items():
        if name == "compare":  # reads run folders; starts no run and has no config
            continue
        params = {p.name for p in sub.params} - set(RUN_OPTIONS) - COMMAND_OPTIONS
        assert params <= fields[name], (name, params - fields[name])
        flags = {o for p in sub.params for o in p.opts if p.name in params}
        assert flags == {"--" + p.replace("_", "-") for p in params}, name


def test_a_runs_config_json_replays_with_flags_on_top(tmp_path, seen, monkeypatch):
    """`--config` (issue 15 item 4): defaults < preset < the run's config.json < flags."""
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))
    erm_out, gen_out = tmp_path / "erm", tmp_path / "gen"
    args = ["erm", "--erm-recipe", "paper-repo", "--toy-n-train", "64", *CPU, "-o", erm_out]
    assert invoke(args).exit_code == 0
    result = invoke(["erm", "--config", erm_out / "config.json", "--toy-seed", "3", "--dry-run"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["preset"] == "toy"
    assert {k: shown["config"][k] for k in ("erm_recipe", "toy_n_train", "toy_seed")} == {
        "erm_recipe": "paper-repo", "toy_n_train": 64, "toy_seed": 3
    }  # fmt: skip
    assert invoke(["generate", "--offline-toy", "--target", "7", "-o", gen_out]).exit_code == 0
    result = invoke(["generate", "--config", gen_out / "config.json", "--dry-run"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert config["target"] == 7 and config["from_file"] == ["builtin:toy"]
    assert config["preset"] == "toy"


def test_filter_and_retrain_have_dry_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run would make runs/tldr/... here
    for command in ("filter", "retrain"):
        result = invoke([command, "--words", WORDS, "--ridge-lambda", "2", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["config"]["ridge_lambda"] == 2.0
    assert not list(tmp_path.iterdir())  # no run folder
