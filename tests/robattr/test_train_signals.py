"""`robattr train` on the training kit, with real processes and real signals (CPU, tiny
MNIST-5k runs of a few ms per step): Ctrl-C and SIGTERM save the current step and print
the command that resumes it, which then ends with exactly the weights of an uninterrupted
run (also under torchrun with two gloo processes); `--resume` of a finished run changes
nothing; `--init-from` starts from another run's weights; `--report-to tensorboard`."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from labshared.launch import read_header
from labshared.runs import latest_checkpoint
from labshared.training.metric_log import read_jsonl
from robattr_cli import train
from robattr_cli.cli import app

# 512 digits in batches of 8: 64 steps per epoch, 128 in all, a few ms each with no
# regulariser; every step logged, so a test can signal as soon as training runs.
BASE = [
    "train", "--dataset", "mnist", "--regularizer", "none", "--limit-train", "512",
    "--limit-eval", "32", "--batch-size", "8", "--log-every", "1", "--device", "cpu",
]  # fmt: skip
ARGS = [*BASE, "--epochs", "2"]
STEPS = 128
# One intra-op thread everywhere: the interrupted, resumed and reference runs must add in
# the same order to agree bit for bit (and two cores are shared).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
CLI = [sys.executable, "-m", "robattr_cli"]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and ckpt.name == f"step-{STEPS:08d}", ckpt
    return load_file(str(ckpt / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def train_steps(run_dir: Path) -> list[int]:
    """The steps of metrics.jsonl's training lines (not validation or final lines)."""
    return [r["step"] for r in read_jsonl(run_dir) if "train_ce" in r]


def wait_for_steps(proc: subprocess.Popen, run_dir: Path, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(train_steps(run_dir)) >= n:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    raise AssertionError(f"no {n} logged steps in {run_dir} after {timeout} s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of ARGS."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run([*CLI, *ARGS, "--num-workers", "1", "-o", str(out)], env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def interrupt_and_resume(out: Path, sig: int, to_group: bool, extra: list[str]) -> str:
    """Start ARGS, send `sig` after a few logged steps, check what the run left, resume it
    with the printed command; returns the resume command."""
    cmd = [*CLI, *ARGS, *extra, "-o", str(out)]
    # A session of its own: the test can signal the whole group, as a terminal does.
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    wait_for_steps(proc, out, 3)
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    lines = [line for line in err.splitlines() if "--resume" in line]
    assert len(lines) == 1, err[-3000:]
    name = signal.Signals(sig).name
    assert lines[0].startswith(f"note: {name}: stopped at step "), lines[0]
    step = int(lines[0].split("stopped at step ")[1].split(",")[0])
    assert 3 <= step < STEPS, "the run ended before the signal: make it longer"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["status"], metrics["step"]) == ("interrupted", step)
    assert latest_checkpoint(out).name == f"step-{step:08d}"
    assert train_steps(out)[-1] == step

    resume = lines[0].split("continue with: ")[1]
    argv = shlex.split(resume)
    assert argv[:2] == ["robattr", "train"] and argv[-1] == "--resume"
    again = subprocess.run([*CLI, *argv[1:]], env=ENV, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming at step {step}" in again.stderr
    assert json.loads(again.stdout)["status"] == "finished"
    # metrics.jsonl stays one history: each step logged once, in order
    assert train_steps(out) == list(range(1, STEPS + 1))
    return resume


def test_ctrl_c_saves_the_step_and_the_printed_command_resumes_exactly(tmp_path, reference):
    """SIGINT to the whole process group, DataLoader worker included (it must not die)."""
    out = tmp_path / "run"
    resume = interrupt_and_resume(out, signal.SIGINT, True, ["--num-workers", "1"])
    assert f"-o {out}" in resume and "--num-workers 1" in resume
    assert_same_weights(final_weights(out), final_weights(reference))
    assert len(read_header(out)["resumed_at"]) == 1


def test_sigterm_saves_the_step_and_resumes_exactly(tmp_path, reference):
    out = tmp_path / "run"
    interrupt_and_resume(out, signal.SIGTERM, False, ["--num-workers", "0"])
    assert_same_weights(final_weights(out), final_weights(reference))


def test_resume_of_a_finished_run_changes_nothing(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    result = CliRunner().invoke(app, ["train", "-o", str(out), "--resume", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert f"{out} is finished at step {STEPS}; nothing to resume" in shown
    assert f"--init-from {out}" in shown
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_init_from_starts_a_new_run_from_the_weights(tmp_path, reference, monkeypatch):
    seen, real = [], train.train_step

    def first_weights(parts, *args, **kwargs):
        if not seen:
            seen.append({k: v.clone() for k, v in parts.model.state_dict().items()})
        return real(parts, *args, **kwargs)

    monkeypatch.setattr(train, "train_step", first_weights)
    out = tmp_path / "run"
    args = [*BASE, "--epochs", "1", "--num-workers", "0", "--init-from", str(reference)]
    result = CliRunner().invoke(app, [*args, "--limit-train", "32", "-o", str(out)])
    assert result.exit_code == 0, result.output
    source = latest_checkpoint(reference) / "model.safetensors"
    assert_same_weights(seen[0], load_file(str(source)))
    header = read_header(out)
    assert header["init_from"] == str(source) and "resumed_at" not in header
    # a new run: its own optimizer and step count (32 digits, batch 8)
    assert json.loads(result.stdout)["steps"] == 4


def test_report_to_tensorboard_gets_the_logged_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["train", "--regularizer", "l2cos", "--limit-train", "48", "--limit-eval", "16",
            "--batch-size", "16", "--epochs", "1", "--log-every", "1", "--num-workers", "0",
            "--device", "cpu"]  # fmt: skip
    bad = CliRunner().invoke(app, [*args, "--report-to", "tensorbored", "-o", str(out)])
    assert bad.exit_code == 1 and "--report-to 'tensorbored'" in bad.output
    assert not out.exists()  # checked before the run folder is made
    result = CliRunner().invoke(app, [*args, "--report-to", "tensorboard", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [r for r in read_jsonl(out) if "train_ce" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"train_ce", "train_l2", "train_cosd", "train_reg", "lr", "img_per_s"} <= set(rows[0])
    assert rows[0]["epoch"] == pytest.approx(1 / 3, abs=1e-4) and rows[0]["time"] >= 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for tag in ("train_ce", "train_cosd", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in rows], tag
    val = [r for r in read_jsonl(out) if "val_acc" in r]
    assert [(e.step, e.value) for e in events.Scalars("val_acc")] == [
        (3, pytest.approx(val[0]["val_acc"]))
    ]
    final = read_jsonl(out)[-1]["final"]
    assert final["best_val_acc"] == json.loads(result.stdout)["best_val_acc"]


# --------------------------------------------------------------------------- torchrun
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_port()), "-m", "robattr_cli",
            *args]  # fmt: skip


@pytest.mark.slow
def test_torchrun_ctrl_c_resumes_exactly(tmp_path):
    """Two gloo processes: Ctrl-C reaches torchrun, which passes SIGINT to its workers;
    both save the same step (with each rank's generator and RNG) and the resumed run ends
    with the weights of an uninterrupted one."""
    args = [*ARGS, "--num-workers", "0"]  # 512 images, 2 ranks: 64 steps
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    ref = subprocess.run(_torchrun(*args, "-o", str(whole)), env=ENV, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]

    proc = subprocess.Popen(_torchrun(*args, "-o", str(parts)), env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    wait_for_steps(proc, parts, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    line = next(x for x in err.splitlines() if "continue with: torchrun" in x)
    step = int(line.split("stopped at step ")[1].split(",")[0])
    assert 3 <= step < STEPS // 2, "the run ended before the signal"
    state = torch.load(latest_checkpoint(parts) / "state.pt", weights_only=True)
    assert state["progress"]["step"] == step and len(state["ranks"]) == 2
    noise = [r["generators"]["noise"] for r in state["ranks"]]
    assert not torch.equal(*noise)  # each rank's own stream, both saved

    again = subprocess.run(_torchrun(*args, "-o", str(parts), "--resume"), env=ENV,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    a = load_file(str(latest_checkpoint(whole) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(parts) / "model.safetensors"))
    assert latest_checkpoint(parts).name == latest_checkpoint(whole).name
    assert_same_weights(a, b)


def test_a_checkpoint_of_the_old_format_says_to_use_init_from(tmp_path):
    out = tmp_path / "run"
    args = [*BASE, "--limit-train", "16", "--epochs", "2", "--max-steps", "1"]
    first = CliRunner().invoke(app, [*args, "--num-workers", "0", "-o", str(out)])
    assert first.exit_code == 0, first.output
    state_file = latest_checkpoint(out) / "state.pt"
    state = torch.load(state_file, weights_only=True)
    state["rng"] = state.pop("ranks")[0]["torch"]  # what robattr saved before the kit
    torch.save(state, state_file)
    again = CliRunner().invoke(app, ["train", "-o", str(out), "--resume", "--device", "cpu"])
    shown = " ".join(again.output.split())
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert "is not a resumable state of this version" in shown
    assert f"--init-from {latest_checkpoint(out)}" in shown
