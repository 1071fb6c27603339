"""rtd train / train-phi on the training kit, in process: `--init-from` starts a new run
from a checkpoint's weights (and the header says so), `--report-to tensorboard` sends the
values of metrics.jsonl, and the run folder says how it stands (metrics.json status).
The real-signal tests are in test_train_signals.py."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from labshared.config import resolve
from labshared.device import Precision, Runtime
from labshared.errors import ConfigError
from labshared.runs import latest_checkpoint, save_checkpoint
from labshared.training.metric_log import read_jsonl
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli import train as train_module
from rtd_cli import train_phi as phi_module
from rtd_cli.cli import app

CPU = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)
TOY = dict(backbone="tiny-clip-toy", pretrained="random", batch_size=4, log_every=1,
           checkpoint_every=2)  # fmt: skip
PHI_ARGS = ["train-phi", "--preset", "toy", "--pretrained", "random", "--captions", "toy:20",
            "--batch-size", "4", "--log-every", "1", "--device", "cpu"]  # fmt: skip


def _first_step_weights(monkeypatch, module, names=None) -> dict[str, torch.Tensor]:
    """Record the trained module's weights as the first step of a run finds them."""
    seen: dict[str, torch.Tensor] = {}
    real = module.train_step

    def spy(parts, state, *args, **kw):
        if not seen:
            weights = state.module.state_dict()
            seen.update({k: weights[k].clone() for k in (names or weights)})
        return real(parts, state, *args, **kw)

    monkeypatch.setattr(module, "train_step", spy)
    return seen


def test_cli_init_from_starts_a_new_run_from_the_checkpoint(tmp_path, monkeypatch):
    runner = CliRunner()
    src, new = tmp_path / "src", tmp_path / "new"
    res = runner.invoke(app, [*PHI_ARGS, "--steps", "2", "-o", str(src)])
    assert res.exit_code == 0, res.output
    seen = _first_step_weights(monkeypatch, phi_module)
    res = runner.invoke(app, [*PHI_ARGS, "--steps", "3", "--init-from", str(src), "-o", str(new)])
    assert res.exit_code == 0, res.output
    source = latest_checkpoint(src) / "model.safetensors"
    saved = load_file(str(source))
    assert seen.keys() == saved.keys()
    for key in saved:  # the new run's first step starts from the source's weights exactly
        assert torch.equal(seen[key], saved[key]), key
    header = json.loads((new / "config.json").read_text())
    assert header["init_from"] == str(source)
    # a new run: it counts its own steps from 0 and ends finished
    assert [r["step"] for r in read_jsonl(new) if "final" not in r] == [1, 2, 3]
    assert json.loads((new / "metrics.json").read_text())["status"] == "finished"
    res = runner.invoke(app, [*PHI_ARGS, "--steps", "2", "--init-from", str(tmp_path / "nope"),
                              "-o", str(tmp_path / "bad")])  # fmt: skip
    assert res.exit_code == 1 and "--init-from" in res.output and not (tmp_path / "bad").exists()


def test_cli_report_to_is_checked_before_the_run_folder_exists(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*PHI_ARGS, "--steps", "1", "--report-to", "tensorbored",
                                   "-o", str(out)])  # fmt: skip
    assert res.exit_code == 1 and "--report-to 'tensorbored'" in res.output
    assert not out.exists()


def test_init_from_a_partial_fine_tune_loads_only_its_tensors(tmp_path, monkeypatch):
    torch.manual_seed(0)
    phi = tmp_path / "phi.pt"
    M.save_projection(phi, M.build_projection("lincir", 128, 128), "lincir")
    layers = "transformer.resblocks.1,ln_final,text_projection"
    fields = dict(TOY, phi=str(phi), triplets="toy:40", steps=2, train_layers=layers)
    cfg = resolve(C.TRAIN_PRESETS, "toy", fields, validate=C.validate_train)
    train_module.train(cfg, tmp_path / "src", CPU)
    saved = load_file(str(latest_checkpoint(tmp_path / "src") / "model.safetensors"))
    assert saved and all(k.startswith(tuple(layers.split(","))) for k in saved)
    seen = _first_step_weights(monkeypatch, train_module, names=list(saved))
    out = train_module.train(cfg, tmp_path / "new", CPU, init_from=tmp_path / "src")
    assert out["step"] == 2
    for key in saved:
        assert torch.equal(seen[key], saved[key]), key


def test_report_to_tensorboard_gets_the_values_of_metrics_jsonl(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = resolve(C.PHI_PRESETS, "toy", dict(TOY, captions="toy:20", steps=3),
                  validate=C.validate_phi)  # fmt: skip
    phi_module.train_phi(cfg, tmp_path / "run", CPU, report_to=("tensorboard",))
    rows = [r for r in read_jsonl(tmp_path / "run") if "final" not in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "lr", "keyword_share", "slot_fallbacks", "captions_per_second"} <= set(rows[0])
    used = json.loads((tmp_path / "run" / "data.json").read_text())["used"]
    assert rows[-1]["epoch"] == pytest.approx(3 * 4 / used)  # steps x batch / captions
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    for name in ("loss", "lr", "captions_per_second"):
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [1, 2, 3]
        # TensorBoard stores float32
        assert [s.value for s in scalars] == [np.float32(r[name]) for r in rows], name
    final = events.Scalars("final/loss")
    assert final[0].value == np.float32(rows[-1]["loss"])


def test_resume_of_a_checkpoint_of_the_old_format_is_one_line_naming_init_from(tmp_path):
    """The state.pt of the format before the kit ('rng': one generator state per rank) does
    not resume; the error says how to keep its weights."""
    cfg = resolve(C.PHI_PRESETS, "toy", dict(TOY, captions="toy:20", steps=2),
                  validate=C.validate_phi)  # fmt: skip
    phi_module.train_phi(cfg, tmp_path / "new", CPU)
    ckpt = latest_checkpoint(tmp_path / "new")
    old = torch.load(ckpt / "state.pt", weights_only=True)
    old_state = {"optimizer": old["optimizer"], "rng": [torch.Generator().get_state()]}
    save_checkpoint(tmp_path / "old", 2, load_file(str(ckpt / "model.safetensors")), old_state)
    with pytest.raises(ConfigError, match=r"not a resumable state .* --init-from .*step-00000002"):
        phi_module.train_phi(cfg, tmp_path / "old", CPU, resume=True)
    out = phi_module.train_phi(cfg, tmp_path / "again", CPU, init_from=tmp_path / "old")
    assert out["step"] == 2


def test_demo_runs_record_their_own_command_line(tmp_path):
    """The demo runs each command in process: the header (and so the resume line of a
    Ctrl-C) has that command's argv, not the demo's."""
    from labshared.cli import run_in_process
    from labshared.launch import read_header
    from labshared.training import resume_command
    from rtd_cli.cli import app

    argv = [*PHI_ARGS, "--steps", "1", "-o", str(tmp_path / "run")]
    run_in_process(app, "rtd", argv)
    assert read_header(tmp_path / "run")["argv"] == argv
    assert resume_command(tmp_path / "run").startswith("rtd train-phi --preset toy")
