"""What `--overwrite` may delete (`labshared.run_folder`), through `start_run` and through
a real command: only one of our run folders, never a folder of other files, never runs
nested below the folder named."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labshared.errors import ConfigError
from labshared.launch import read_header, start_run
from labshared.run_folder import claim_output_dir, nested_runs, run_header


def _start(out, **kw):
    return start_run(
        "tool", "train", {"lr": 0.1}, version="0", preset="toy", output_dir=out, device="cpu",
        **kw,
    )  # fmt: skip


def _user_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("my notes")
    (root / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return root


def test_a_folder_of_user_files_is_never_deleted(tmp_path):
    out = _user_folder(tmp_path / "mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as err:
            _start(out, overwrite=overwrite)
        message = str(err.value)
        assert "\n" not in message
        assert "is not a run folder" in message and "notes.txt, sub/" in message
        assert "--overwrite deletes only a run folder" in message
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "sub" / "data.csv").read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]


def test_a_config_json_that_is_not_our_header_is_not_a_run_folder(tmp_path):
    out = tmp_path / "other"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "bert"}))  # someone else's config
    with pytest.raises(ConfigError, match="is not a run folder"):
        _start(out, overwrite=True)
    assert (out / "config.json").is_file()
    (out / "config.json").write_text("{not json")
    assert run_header(out) is None


def test_the_refusal_says_which_run_overwrite_would_delete(tmp_path):
    out = tmp_path / "run"
    _start(out)
    started = read_header(out)["started_at"]
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        _start(out)
    assert str(err.value) == (
        f"--output-dir {out} is not empty; pass --resume to continue it or --overwrite to "
        f"delete it and start again (it holds the run `tool train` (preset toy) started "
        f"{started})"
    )
    with pytest.raises(ConfigError, match=r"is not empty; pass --overwrite to delete it"):
        _start(out, resumable=False)  # a command without --resume does not suggest it
    assert _start(out, overwrite=True).dir == out
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_nested_runs_are_never_deleted_by_overwrite(tmp_path, monkeypatch):
    """The README's rtd sequence: `rtd eval` without -o writes runs/rtd/eval/<ts>; then
    `-o runs/rtd --overwrite` must not delete that evaluation."""
    monkeypatch.chdir(tmp_path)
    ev = start_run("rtd", "eval", {"a": 1}, version="0", device="cpu")
    assert ev.dir.parts[:3] == ("runs", "rtd", "eval")  # the default folder layout
    (ev.dir / "metrics.json").write_text('{"r1": 49.6}')
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as err:
            start_run("rtd", "train", {}, version="0", output_dir="runs/rtd",
                      overwrite=overwrite, device="cpu")  # fmt: skip
        assert "is not a run folder" in str(err.value)
        assert f"1 run folder: {ev.dir} (`rtd eval` started" in str(err.value)
    assert (ev.dir / "metrics.json").read_text() == '{"r1": 49.6}'

    # a run folder of ours with another run written inside it: both are kept
    outer = tmp_path / "train"
    _start(outer)
    inner = start_run("rtd", "eval", {}, version="0", output_dir=outer / "eval", device="cpu")
    with pytest.raises(ConfigError, match="below it, 1 run folder: .*--overwrite would delete"):
        _start(outer, overwrite=True)
    assert [p for p, _ in nested_runs(outer)] == [inner.dir]
    assert read_header(inner.dir)["command"] == "eval"


def test_file_and_empty_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        _start(tmp_path / "f", overwrite=True)
    (tmp_path / "empty").mkdir()
    assert not claim_output_dir(tmp_path / "empty", overwrite=False)
    assert _start(tmp_path / "empty").dir == tmp_path / "empty"


def test_an_occupied_folder_is_refused_before_the_tools_checks(tmp_path):
    out = _user_folder(tmp_path / "mine")
    seen = []
    with pytest.raises(ConfigError, match="is not a run folder"):
        _start(out, validate=lambda: seen.append("loaded the data"))
    assert seen == []


def test_the_header_never_holds_secrets(tmp_path):
    cfg = {"model": "gpt", "openai_api_key": "sk-SECRET", "nested": {"token": "t0k"}}
    run = start_run("tool", "generate", cfg, version="0", output_dir=tmp_path / "r", device="cpu")
    text = (run.dir / "config.json").read_text()
    assert "sk-SECRET" not in text and "t0k" not in text
    assert json.loads(text)["config"] == {"model": "gpt", "nested": {}}


def test_robattr_overwrite_keeps_user_files(tmp_path):
    """The issue's case: `robattr train -o <folder of user files> --overwrite` wiped it."""
    from robattr_cli.cli import app

    out = _user_folder(tmp_path / "mine")
    result = CliRunner().invoke(app, ["train", "-o", str(out), "--overwrite", "--device", "cpu"])
    assert result.exit_code == 1
    assert "is not a run folder" in result.output and "notes.txt" in result.output
    assert (out / "sub" / "data.csv").is_file() and (out / "notes.txt").is_file()
