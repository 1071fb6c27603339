"""Ctrl-C and SIGTERM during `rtd train-phi` / `rtd train`, with real signals on real CLI
processes: the step is saved, the run is marked interrupted, one line says how to go on,
and that command ends with exactly the weights of an uninterrupted run. Then `--resume`
of the finished run changes nothing.

Each run is a subprocess of the real CLI (`python -m rtd_cli`) on the toy preset with a
random tiny CLIP, one thread, a step every log. The process start (imports) dominates, so
the two tests are marked slow; the training itself is a few seconds.
"""

import json
import os
import shlex
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

from labshared.training.metric_log import read_jsonl
from rtd_cli.cli import app

STEPS = 120


def _tiny(steps: int = STEPS) -> list[str]:
    return ["--preset", "toy", "--pretrained", "random", "--batch-size", "4", "--device", "cpu",
            "--steps", str(steps), "--log-every", "1", "--checkpoint-every", "1000"]  # fmt: skip


TINY = _tiny()
PHI = ["train-phi", *TINY, "--captions", "toy:40"]


def _env() -> dict[str, str]:
    # One thread: two OpenMP threads on a small shared CPU make a tiny step many times slower.
    return {**os.environ, "OMP_NUM_THREADS": "1", "LABSHARED_NO_PROGRESS": "1"}


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rtd_cli", *args]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cli(args), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted train-phi run (its phi.pt also feeds `rtd train`)."""
    out = tmp_path_factory.mktemp("signals") / "phi-straight"
    _run([*PHI, "-o", str(out)])
    return out


def _logged(run: Path) -> int:
    """Complete lines in metrics.jsonl so far (a line being written has no newline yet)."""
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def _interrupt(args: list[str], out: Path, sig: int) -> tuple[int, str]:
    """Start the CLI, wait until metrics.jsonl shows 3 steps, send `sig`; returns (exit code,
    stderr)."""
    proc = subprocess.Popen(_cli([*args, "-o", str(out)]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    deadline = time.monotonic() + 300
    while _logged(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _interrupted_then_resumed(args: list[str], out: Path, sig: int, code: int) -> int:
    """The interrupted run's checks; runs its resume command to the end; returns the step
    the run was interrupted at."""
    rc, err = _interrupt(args, out, sig)
    assert rc == code, err[-3000:]
    lines = [line for line in err.splitlines() if "--resume" in line]
    assert len(lines) == 1 and f"{signal.Signals(sig).name}: stopped at step" in lines[0]
    metrics = json.loads((out / "metrics.json").read_text())
    step = metrics["step"]
    assert metrics["status"] == "interrupted" and 3 <= step < STEPS
    assert (out / "checkpoints" / f"step-{step:08d}" / "model.safetensors").is_file()
    command = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert command[0] == "rtd" and "--resume" in command and str(out) in command
    proc = _run(command[1:])
    assert f"resuming at step {step} " in proc.stderr
    # one history: each step logged once, the lines of the two invocations in order
    steps = [r["step"] for r in read_jsonl(out) if "final" not in r]
    assert steps == list(range(1, STEPS + 1))
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"
    return step


def _resume_of_finished_changes_nothing(args: list[str], out: Path) -> None:
    before = (out / "config.json").read_bytes()
    res = CliRunner().invoke(app, [*args, "-o", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert "is finished at step" in res.output and "--init-from" in res.output
    assert (out / "config.json").read_bytes() == before


@pytest.mark.slow
def test_ctrl_c_saves_the_step_and_resume_ends_bit_exact_train_phi(reference, tmp_path):
    out = tmp_path / "phi-cut"
    _interrupted_then_resumed(PHI, out, signal.SIGINT, 130)
    a = torch.load(reference / "phi.pt", weights_only=True)["Phi"]
    b = torch.load(out / "phi.pt", weights_only=True)["Phi"]
    assert a.keys() == b.keys()
    for key in a:  # bit for bit
        assert torch.equal(a[key], b[key]), key
    _resume_of_finished_changes_nothing(PHI, out)


@pytest.mark.slow
def test_sigterm_saves_the_step_and_resume_ends_bit_exact_train(reference, tmp_path):
    train = ["train", *TINY, "--phi", str(reference / "phi.pt"), "--triplets", "toy:40"]
    _run([*train, "-o", str(tmp_path / "straight")])
    out = tmp_path / "cut"
    _interrupted_then_resumed(train, out, signal.SIGTERM, 143)
    a = load_file(str(tmp_path / "straight" / "text_tower.safetensors"))
    b = load_file(str(out / "text_tower.safetensors"))
    assert a.keys() == b.keys()
    for key in a:  # bit for bit
        assert torch.equal(a[key], b[key]), key
    _resume_of_finished_changes_nothing(train, out)


def _torchrun(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_under_torchrun_saves_every_rank_and_resume_ends_bit_exact(reference, tmp_path):
    """torchrun (2 gloo processes) passes SIGTERM to its workers: both save the same step
    (every rank's generator), and the printed torchrun command ends with the weights of an
    uninterrupted 2-process run."""
    steps = 30
    train = ["train", *_tiny(steps), "--phi", str(reference / "phi.pt"), "--triplets", "toy:40"]
    straight, out = tmp_path / "straight", tmp_path / "cut"
    proc = subprocess.run([*_torchrun(_free_port()), "-m", "rtd_cli", *train, "-o", str(straight)],
                          capture_output=True, text=True, env=_env(), timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    agent = subprocess.Popen([*_torchrun(_free_port()), "-m", "rtd_cli", *train, "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env())  # fmt: skip
    deadline = time.monotonic() + 300
    while _logged(out) < 3 and agent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode != 0
    metrics = json.loads((out / "metrics.json").read_text())
    step = metrics["step"]
    assert metrics["status"] == "interrupted" and 3 <= step < steps, err[-3000:]
    state = torch.load(out / "checkpoints" / f"step-{step:08d}" / "state.pt", weights_only=True)
    noise = [rank["generators"]["noise"] for rank in state["ranks"]]
    assert len(noise) == 2 and not torch.equal(*noise)
    line = next(x for x in err.splitlines() if "continue with: torchrun" in x)
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[:3] == ["torchrun", "--nproc_per_node", "2"] and command[-1] == "--resume"
    proc = subprocess.run([*_torchrun(_free_port()), *command[3:]], capture_output=True,
                          text=True, env=_env(), timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(straight / "text_tower.safetensors"))
    b = load_file(str(out / "text_tower.safetensors"))
    for key in a:  # bit for bit
        assert torch.equal(a[key], b[key]), key
