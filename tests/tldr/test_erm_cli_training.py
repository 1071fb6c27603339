"""`tldr erm` through its command line: Ctrl-C and SIGTERM with real signals (a
subprocess), the one line that says how to go on, and a resume that ends with the weights
of an uninterrupted run; --resume of a finished run; --init-from; --report-to checked
before a run folder exists. (The TensorBoard read-back is in test_retrain_cli: the same
MetricLogger serves the TLDR head.)"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import tldr_cli.erm
from labshared.launch import read_header
from labshared.training.metric_log import read_jsonl
from labshared.training.state import read_weights
from tldr_cli.cli import app

# The toy recipe (batch 64, 4 epochs) on 256 images: 4 steps an epoch, 16 in all.
TOY = ["erm", "--preset", "toy", "--toy-n-train", "256", "--toy-n-test", "16",
       "--device", "cpu", "--no-cache"]  # fmt: skip
STEPS = 16
CLI = [sys.executable, "-m", "tldr_cli"]


def _final_weights(run_dir):
    return read_weights(run_dir / "checkpoints" / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run (in-process: start_run seeds every RNG, as in a subprocess)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = CliRunner().invoke(app, [*TOY, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _run_and_signal(out, sig):
    """Start `tldr erm`, wait until metrics.jsonl shows two steps, send `sig`."""
    env = {**os.environ, "LABSHARED_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [*CLI, *TOY, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    while len(read_jsonl(out)) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step logged"
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=900)
    return proc.returncode, stdout, stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_saves_the_step_and_the_resume_command_finishes_bit_exact(tmp_path, straight, sig):
    out = tmp_path / "run"
    code, stdout, stderr = _run_and_signal(out, sig)
    assert code == 128 + sig, stderr  # 130 for Ctrl-C, 143 for SIGTERM
    lines = [line for line in stderr.splitlines() if "--resume" in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    status = json.loads((out / "metrics.json").read_text())
    step = status["step"]
    assert status["status"] == "interrupted" and 2 <= step < STEPS
    assert f"stopped at step {step}" in lines[0]
    assert (out / "checkpoints" / f"step-{step:08d}" / "state.pt").is_file()
    assert not (out / "checkpoints" / "final").exists()

    command = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert command[:2] == ["tldr", "erm"] and command[-1] == "--resume"
    resumed = subprocess.run([*CLI, *command[1:]], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step}" in resumed.stderr
    for name, value in _final_weights(straight).items():
        assert torch.equal(value, _final_weights(out)[name]), name
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"
    assert [r["step"] for r in read_jsonl(out)] == [*range(1, STEPS + 1), STEPS]


def test_resume_of_a_finished_run_says_so_and_changes_nothing(straight):
    header = (straight / "config.json").read_bytes()
    result = CliRunner().invoke(app, [*TOY, "-o", str(straight), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"is finished at step {STEPS}" in result.output
    assert (straight / "config.json").read_bytes() == header


def test_init_from_starts_from_the_source_weights(tmp_path, straight, monkeypatch):
    source = straight / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors"
    bad = CliRunner().invoke(app, [*TOY, "--report-to", "tensorbored", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "--report-to 'tensorbored'" in bad.output
    other = CliRunner().invoke(
        app, [*TOY, "--init-from", str(straight), "--arch", "resnet50", "-o", str(tmp_path / "x")]
    )
    assert other.exit_code == 1 and "a toy-cnn checkpoint, but this run trains resnet50" in (
        other.output
    )
    assert not (tmp_path / "x").exists()  # both checked before the run folder is made

    first = {}
    step = tldr_cli.erm._step

    def spy(state, *args):
        first.setdefault("weights", {k: v.clone() for k, v in state.module.state_dict().items()})
        return step(state, *args)

    monkeypatch.setattr(tldr_cli.erm, "_step", spy)
    out = tmp_path / "longer"
    result = CliRunner().invoke(app, [*TOY, "--init-from", str(straight), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name, value in read_weights(source).items():
        assert torch.equal(first["weights"][name], value), name
    assert read_header(out)["init_from"] == str(source)
