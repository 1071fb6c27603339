"""The training kit (labshared.training): exact resume, signals, the step log and its
trackers, the progress display, and what start_run does with --resume / --init-from."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from labshared.device import setup_runtime
from labshared.errors import ConfigError
from labshared.launch import RunFinished, read_header, start_run
from labshared.training import (
    Interrupt,
    MetricLogger,
    StepProgress,
    TrainState,
    load_init_weights,
    parse_report_to,
    restore_state,
    resume_command,
    save_state,
    write_status,
)
from labshared.training.metric_log import read_jsonl


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    gen = torch.Generator().manual_seed(7)
    return TrainState(model, opt, {"noise": gen}, sched, scaler, progress={"step": 0})


def _step(state: TrainState) -> None:
    """One step whose result depends on the noise generator AND the global RNG (dropout)."""
    x = torch.randn(5, 4, generator=state.generators["noise"])
    loss = state.module(x).square().mean()
    state.optimizer.zero_grad()
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.progress["step"] += 1
    state.progress.setdefault("history", []).append(float(loss.detach()))


def test_resume_is_bit_exact(tmp_path):
    runtime = setup_runtime("cpu", "fp32", 0)
    straight = _parts()
    torch.manual_seed(123)
    for _ in range(6):
        _step(straight)

    first = _parts()
    torch.manual_seed(123)
    for _ in range(3):
        _step(first)
    save_state(tmp_path, first, runtime, meta={"kind": "toy"})
    torch.manual_seed(999)  # whatever happens in between must not matter

    second = _parts(seed=5)  # other initial weights: the checkpoint replaces them
    meta = restore_state(tmp_path, second, runtime)
    assert meta["step"] == 3 and meta["kind"] == "toy" and second.step == 3
    for _ in range(3):
        _step(second)
    for a, b in zip(
        straight.module.state_dict().values(), second.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert second.progress["history"] == straight.progress["history"]
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def test_restore_without_checkpoint_says_step_zero(tmp_path, capsys):
    runtime = setup_runtime("cpu", "fp32", 0)
    state = _parts()
    assert restore_state(tmp_path, state, runtime) == {}
    assert state.step == 0


def test_init_from_loads_weights_and_checks_the_model(tmp_path):
    runtime = setup_runtime("cpu", "fp32", 0)
    trained = _parts()
    for _ in range(2):
        _step(trained)
    save_state(tmp_path / "run", trained, runtime)
    fresh = _parts(seed=9)
    record = load_init_weights(tmp_path / "run", fresh.module)
    assert record["step"] == 2 and record["path"].endswith("model.safetensors")
    for a, b in zip(
        trained.module.state_dict().values(), fresh.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    other = nn.Linear(3, 3)
    with pytest.raises(ConfigError, match="--init-from .*another model"):
        load_init_weights(tmp_path / "run", other)
    with pytest.raises(ConfigError, match="--init-from .*does not exist"):
        load_init_weights(tmp_path / "nope", fresh.module)


def test_interrupt_turns_a_signal_into_a_request():
    runtime = setup_runtime("cpu", "fp32", 0)
    before = signal.getsignal(signal.SIGTERM)
    with Interrupt() as interrupt:
        assert not interrupt.requested(runtime)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the kit
        assert interrupt.requested(runtime)
        assert interrupt.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_ctrl_c_leaves_at_once():
    with Interrupt(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)


def test_resume_command_drops_flags_that_start_another_run(tmp_path):
    header = {
        "tool": "robattr",
        "command": "train",
        "argv": ["train", "--epochs", "3", "--overwrite", "--init-from", "old/run"],
    }
    (tmp_path / "config.json").write_text(json.dumps(header))
    cmd = resume_command(tmp_path)
    assert cmd == f"robattr train --epochs 3 -o {tmp_path} --resume"
    header["argv"] = ["train", "-o", "x y", "--init-from=a"]
    (tmp_path / "config.json").write_text(json.dumps(header))
    assert resume_command(tmp_path) == "robattr train -o 'x y' --resume"


def test_metric_logger_writes_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricLogger(tmp_path, parse_report_to("tensorboard")) as logger:
        for step in (1, 2, 3):
            logger.log(step, {"loss": 1.0 / step, "lr": 0.1, "note": "text"}, epoch=step / 3)
    rows = read_jsonl(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["loss"] == 0.5 and rows[1]["epoch"] == pytest.approx(2 / 3)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("loss")]
    assert loss == [(r["step"], pytest.approx(r["loss"])) for r in rows]
    assert "note" not in events.Tags()["scalars"]


def test_metric_logger_resume_drops_lines_past_the_checkpoint(tmp_path):
    with MetricLogger(tmp_path) as logger:
        for step in range(1, 6):
            logger.log(step, {"loss": float(step)})
    with MetricLogger(tmp_path, resume_step=3) as logger:
        logger.log(4, {"loss": 40.0})
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
    ]


def test_metric_logger_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    with MetricLogger(tmp_path, parse_report_to("wandb"), config={"lr": 0.1}) as logger:
        logger.log(1, {"loss": 0.5})
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_report_to_names_unknown_and_missing_trackers(monkeypatch):
    assert parse_report_to(None) == () and parse_report_to("none") == ()
    with pytest.raises(ConfigError, match="expected a comma-separated list"):
        parse_report_to("tensorbored")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'labshared\[wandb\]'"):
        parse_report_to("wandb")


def test_progress_off_a_terminal_prints_timestamped_lines_with_eta(capsys):
    now = [0.0]
    with StepProgress(100, start=20, label="demo none", every=5.0, clock=lambda: now[0]) as bar:
        for done in range(21, 101):
            now[0] += 0.5
            bar.update(done, status=f"loss {1 / done:.3f}")
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if "demo none step" in line]
    # one line every 5 s of the fake clock (10 steps), plus the last step
    assert len(lines) == 8
    assert "step 30/100 (30.0%) 2 step/s ETA 35s loss 0.033" in lines[0]
    assert lines[-1].split("] ")[1].startswith("demo none step 100/100 (100.0%)")


def _start(tmp_path, **kw):
    return start_run(
        "kit",
        "train",
        {"lr": 0.1},
        version="0",
        output_dir=tmp_path / "run",
        device="cpu",
        precision="fp32",
        **kw,
    )


def test_start_run_records_the_command_line_and_init_from(tmp_path, monkeypatch):
    state = _parts()
    save_state(tmp_path / "old", state, setup_runtime("cpu", "fp32", 0))
    monkeypatch.setattr("sys.argv", ["kit", "train", "--lr", "0.1"])
    run = _start(tmp_path, init_from=tmp_path / "old")
    header = read_header(run.dir)
    assert header["argv"] == ["train", "--lr", "0.1"]
    assert header["init_from"] == str(run.init_from) and run.init_from.name == "model.safetensors"
    assert "git_dirty" in header


def test_init_from_a_missing_run_leaves_no_folder(tmp_path):
    with pytest.raises(ConfigError, match="--init-from"):
        _start(tmp_path, init_from=tmp_path / "missing")
    assert not (tmp_path / "run").exists()


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    run = _start(tmp_path)
    write_status(run.dir, "finished", step=10)
    before = (run.dir / "config.json").read_bytes()
    with pytest.raises(RunFinished, match="is finished at step 10; nothing to resume") as info:
        _start(tmp_path, resume=True)
    assert info.value.exit_code == 0
    assert (run.dir / "config.json").read_bytes() == before


def test_write_status_keeps_what_was_there(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"loss": 1.5, "status": "running"}))
    write_status(tmp_path, "interrupted", step=4)
    assert json.loads(Path(tmp_path / "metrics.json").read_text()) == {
        "loss": 1.5,
        "step": 4,
        "status": "interrupted",
    }


def test_in_process_commands_record_their_own_arguments(tmp_path, monkeypatch):
    """A command run in process (a demo, CliRunner) records the arguments the app was given,
    not the process's sys.argv, and only while it runs."""
    from typer.testing import CliRunner

    from labshared import invocation
    from labshared.cli import make_app

    app = make_app("kit", "test app", "0")
    seen = []

    @app.command("train")
    def train(lr: float = 0.1) -> None:
        seen.append(invocation.command_args())

    monkeypatch.setattr("sys.argv", ["pytest", "-q"])
    result = CliRunner().invoke(app, ["train", "--lr", "0.5"])
    assert result.exit_code == 0, result.output
    assert seen == [["train", "--lr", "0.5"]]
    assert invocation.command_args() == ["-q"]


def test_report_final_sends_an_evaluations_numbers_like_a_trainers(tmp_path):
    """Issue 15 item 3: an evaluation's final metrics reach metrics.jsonl and TensorBoard
    the way the trainers' steps do (nested numbers flattened to 'a/b'; text skipped)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labshared.training import report_final

    metrics = {"summary": {"R@1": 47.9, "R@10": 78.0}, "n_queries": {"toy": 1000},
               "run_dir": "x", "ok": True}  # fmt: skip
    report_final(tmp_path, metrics, parse_report_to("tensorboard"))
    (row,) = read_jsonl(tmp_path)
    assert row["final"] == {"summary/R@1": 47.9, "summary/R@10": 78.0, "n_queries/toy": 1000.0}
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"final/summary/R@1", "final/summary/R@10", "final/n_queries/toy"}
    assert events.Scalars("final/summary/R@1")[0].value == pytest.approx(47.9)
