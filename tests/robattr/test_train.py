"""`robattr train` end to end on the real MNIST-5k digits (tiny subsets, CPU, seconds):
run folder contents, reload through `load_trained`, exact resume after an interruption,
config conflicts on resume, a failed start that leaves no folder, and 2-process gloo DDP."""

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from labshared.launch import read_header
from labshared.runs import latest_checkpoint, load_checkpoint
from robattr_cli import __version__, train
from robattr_cli.cli import app
from robattr_cli.model import load_trained

TINY = [
    "--dataset", "mnist", "--limit-train", "96", "--limit-eval", "64", "--batch-size", "32",
    "--epochs", "2", "--device", "cpu", "--num-workers", "0",
]  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def test_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    result = invoke(*TINY, "--regularizer", "l2cos", "-o", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "finished" and summary["steps"] == 6
    assert summary["run_dir"] == str(out)

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    first = metrics["history"][0]
    assert {"train_ce", "train_l2", "train_cosd", "val_acc", "val_ce"} <= set(first)
    assert 0 <= first["train_cosd"] <= 1 and first["train_l2"] >= 0
    assert metrics["best_val_acc"] == max(r["val_acc"] for r in metrics["history"])

    header = read_header(out)
    assert [header[k] for k in ("tool", "command", "version")] == ["robattr", "train", __version__]
    assert header["preset"] == "mnist-toy" and header["runtime"]["seed"] == 1234
    runtime = header["runtime"]  # one process, as the preset (and RobustAGA's scripts) design
    assert (runtime["global_batch"], runtime["gradients_averaged"]) == (32, False)
    assert runtime["preset_processes"] == 1 and "designed for" not in result.output
    cfg = header["config"]
    assert cfg["preset"] == "mnist-toy" and cfg["limit_train"] == 96 and cfg["eps"] == 16.0

    model, meta = load_trained(out, "cpu")
    assert meta["model"] == "mnist-cnn" and meta["dataset"] == "mnist" and meta["step"] == 6
    assert meta["mean"] == [0.1313] and meta["activation"] == "softplus" and meta["beta"] == 3.0
    assert any(isinstance(m, torch.nn.Softplus) for m in model.modules())
    best, best_meta = load_trained(out, "cpu", which="best")
    assert best_meta["epoch"] == metrics["best_epoch"]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("regularizer", "terms"),
    [("none", set()), ("l2", {"l2", "cosd"}), ("cos", {"l2", "cosd"}), ("hessian", {"hessian"})],
)
def test_each_regularizer_trains_and_logs_its_terms(tmp_path, regularizer, terms):
    args = ["--limit-train", "32", "--limit-eval", "16", "--batch-size", "16", "--epochs", "1"]
    result = invoke(*args, "--regularizer", regularizer, "-o", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "metrics.json").read_text())["history"][0]
    logged = {k.removeprefix("train_") for k in record if k.startswith("train_")}
    assert logged == {"acc", "ce", "reg"} | terms
    if regularizer == "l2":  # only the l2 term is weighted into the penalty
        assert record["train_reg"] == pytest.approx(0.01 * record["train_l2"], rel=1e-4)
    if regularizer == "none":
        assert record["train_reg"] == 0


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state, _, meta = load_checkpoint(latest_checkpoint(run_dir))
    assert meta["step"] == 6
    return state


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert invoke(*TINY, "-o", str(whole)).exit_code == 0

    # Ctrl-C during step 5 (inside epoch 2), after the checkpoint --save-every 4 wrote
    real_step, calls = train.train_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", interrupted)
    first = invoke(*TINY, "-o", str(parts), "--save-every", "4")
    assert first.exit_code == 130 and len(calls) == 5, first.output  # 130: Ctrl-C
    monkeypatch.undo()
    _, train_state, meta = load_checkpoint(latest_checkpoint(parts))
    assert meta["step"] == 4 and train_state["progress"]["step_in_epoch"] == 1

    # no flags needed: the run's own config; --num-workers is a run-time knob
    second = invoke("-o", str(parts), "--resume", "--device", "cpu", "--num-workers", "0")
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["status"] == "finished" and summary["steps"] == 6
    history = json.loads((parts / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2]

    a, b = _final_weights(whole), _final_weights(parts)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_resume_refuses_flags_that_change_the_experiment(tmp_path):
    out = tmp_path / "run"
    assert invoke(*TINY, "-o", str(out), "--max-steps", "2").exit_code == 0
    result = invoke("-o", str(out), "--resume", "--regularizer", "none", "--device", "cpu")
    assert result.exit_code == 1
    assert "regularizer: saved 'l2cos', now 'none'" in " ".join(result.output.split())
    # --max-steps and --epochs are part of the run (the LR schedule), not run-time knobs
    result = invoke("-o", str(out), "--resume", "--max-steps", "6", "--epochs", "3")
    shown = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "epochs: saved 2, now 3; max_steps: saved 2, now 6" in shown
    result = invoke("-o", str(out), "--resume", "--seed", "7")
    assert result.exit_code == 1 and "seed: saved 1234, now 7" in " ".join(result.output.split())


def test_a_run_stopped_by_max_steps_is_complete(tmp_path):
    """--max-steps belongs to the run: resuming it trains no further step."""
    out = tmp_path / "run"
    first = invoke(*TINY, "-o", str(out), "--max-steps", "4")  # stops inside epoch 2
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["status"] == "stopped"
    again = invoke("-o", str(out), "--resume", "--save-every", "1")  # a run-time knob
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["status"] == "stopped" and summary["steps"] == 4
    assert len(read_header(out)["resumed_at"]) == 1
    assert load_checkpoint(latest_checkpoint(out))[2]["step"] == 4


def test_a_failed_start_leaves_no_folder_and_the_corrected_rerun_works(tmp_path):
    out = tmp_path / "run"
    result = invoke("--dataset", "mnsit", "-o", str(out))
    assert result.exit_code == 1 and "--dataset 'mnsit' is unknown" in result.output
    assert "did you mean 'mnist'" in result.output
    result = invoke("--dataset", "cifar10", "--model", "lenet", "-o", str(out))  # no --data-root
    assert result.exit_code == 1 and "--dataset cifar10 needs --data-root" in result.output
    result = invoke(*TINY, "--device", "cuda:9", "-o", str(out))  # no such device
    assert result.exit_code == 1 and "--device" in result.output
    assert not out.exists()
    result = invoke(*TINY, "--epochs", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_dir"] == str(out)


def test_bad_combinations_fail_before_loading_data(tmp_path):
    result = invoke("--dataset", "mnist", "--model", "lenet", "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "--model lenet takes 3 x 32" in result.output
    result = invoke("--regularizer", "l2cosd", "--dry-run")
    assert result.exit_code == 1 and "did you mean 'l2cos'" in result.output
    result = invoke("--preset", "cifar10-lenet", "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "--dataset cifar10 needs --data-root" in result.output
    assert not (tmp_path / "x").exists()


def test_dry_run_prints_the_resolved_preset():
    result = invoke("--preset", "cifar10-resnet18", "--lambda-cos", "0.5", "--dry-run")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # {"preset", "config"}, as every command's --dry-run
    cfg = out["config"]
    assert out["preset"] == cfg["preset"] == "cifar10-resnet18"
    assert cfg["model"] == "resnet18-cifar" and cfg["optimizer"] == "adamw"
    assert cfg["lambda_cos"] == 0.5 and cfg["lambda_l2"] == 0.01 and cfg["milestones"] == [100, 150]


def _ddp_worker(rank: int, world: int, port: int, out: str, queue) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    from labshared import distributed
    from labshared.launch import start_run
    from robattr_cli import train
    from robattr_cli.config import resolve_config

    # Record every rank's weights whenever a checkpoint is written (only rank 0 saves).
    sums, save = [], train.save_state

    def spy(run_dir, state, runtime, **kwargs):
        sums.append(sum(p.double().sum().item() for p in state.module.parameters()))
        save(run_dir, state, runtime, **kwargs)

    train.save_state = spy
    overrides = {"limit_train": 64, "limit_eval": 32, "batch_size": 16, "epochs": 1}
    overrides["num_workers"] = 0
    cfg = resolve_config(None, "mnist", None, overrides)
    run = start_run("robattr", "train", cfg, version="test", output_dir=out, device="cpu")
    try:
        summary = train.run(cfg, run.runtime, run.dir)
    finally:
        distributed.cleanup()
    queue.put((rank, summary["steps"], summary["world_size"], sums[-1]))


@pytest.mark.slow
def test_two_process_gloo_ddp_trains_the_regularised_model(tmp_path, free_port):
    port = free_port
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, port, str(tmp_path / "ddp"), queue), nprocs=2, start_method="spawn"
    )
    results = sorted(queue.get() for _ in range(2))
    # 64 images / 2 ranks / batch 16 = 2 steps per rank, each a global batch of 32.
    assert [r[:3] for r in results] == [(0, 2, 2), (1, 2, 2)]
    # Each rank drew its own noise, yet gradients were averaged: the weights agree.
    assert results[0][3] == pytest.approx(results[1][3], rel=1e-9)
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["status"] == "finished"
    model, _ = load_trained(tmp_path / "ddp", "cpu")
    assert torch.isfinite(model(torch.zeros(1, 1, 28, 28))).all()


@pytest.mark.parametrize("amp", [False, True])
def test_regularizer_runs_in_fp32_outside_autocast(monkeypatch, amp):
    """Under AMP (bf16 autocast, here on CPU) the cross-entropy forward is autocast but the
    regulariser runs in fp32 on its own forward; in fp32 it reuses the clean forward."""
    from labshared.device import Precision, Runtime
    from robattr_cli.config import PRESETS
    from robattr_cli.regularizers import REGULARIZERS
    from robattr_cli.train import build_parts, train_step

    precision = (
        Precision("bf16", torch.bfloat16, False) if amp else Precision("fp32", torch.float32, False)
    )
    runtime = Runtime(torch.device("cpu"), precision, seed=0)
    seen, real = {}, REGULARIZERS["l2cos"]

    def spy(model, x, y, spec, generator, clean=None):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["reused"] = clean is not None
        out = real(model, x, y, spec, generator, clean)
        seen["dtypes"] = {out.penalty.dtype, *(t.dtype for t in out.terms.values())}
        return out

    monkeypatch.setitem(REGULARIZERS, "l2cos", spy)
    torch.manual_seed(0)
    cfg = PRESETS["mnist-toy"]
    parts = build_parts(cfg, runtime)
    model = parts.model
    assert (parts.spec.eps, parts.spec.std, parts.spec.lambda_l2) == (16.0, (0.3086,), 0.01)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    stats = train_step(parts, x, y, cfg, runtime, torch.Generator())
    assert seen == {"autocast": False, "reused": not amp, "dtypes": {torch.float32}}
    assert stats["n"].item() == 8 and torch.isfinite(stats["cosd"])
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def _write_cifar(root: Path, n: int = 8) -> None:
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        entry[b"labels"] = [int(v) for v in rng.integers(0, 10, n)]
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


@pytest.mark.parametrize(
    ("preset", "regularizer"),
    [
        ("cifar10-lenet", "l2cos"),
        # ~20 s: a third-order backward through ResNet-18's (elementary) BatchNorm on CPU
        pytest.param("cifar10-resnet18", "hessian", marks=pytest.mark.slow),
    ],
)
def test_paper_presets_train_on_official_cifar_batches(tmp_path, preset, regularizer):
    _write_cifar(tmp_path / "data")
    args = ["--preset", preset, "--data-root", str(tmp_path / "data"), "--epochs", "1"]
    args += ["--regularizer", regularizer, "--limit-train", "8", "--batch-size", "4"]
    result = invoke(*args, "--num-workers", "0", "--device", "cpu", "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["status"] == "finished"
    model, meta = load_trained(tmp_path / "run", "cpu")
    assert meta["std"] == [0.2023, 0.1994, 0.201] and meta["regularizer"] == regularizer
    # a Hessian-trained ResNet reloads as a plain one (the state_dict keys are unchanged)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("args", "preset", "model"),
    [
        ([], "mnist-toy", "mnist-cnn"),
        (["--dataset", "cifar10"], "cifar10-lenet", "lenet"),
        (
            ["--dataset", "cifar10", "--model", "resnet18-cifar"],
            "cifar10-resnet18",
            "resnet18-cifar",
        ),
        (["--dataset", "cifar10", "--model", "resnet18"], "custom", "resnet18"),
    ],
)
def test_without_preset_train_starts_from_the_preset_of_dataset_and_model(args, preset, model):
    """`config_command(start=...)`: no --preset -> the paper preset of --dataset/--model,
    or the dataclass defaults (preset `custom`) for a pair no paper setting covers."""
    result = invoke(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["preset"] == out["config"]["preset"] == preset and out["config"]["model"] == model
    if preset == "custom":
        assert out["config"]["epochs"] == 300 and out["config"]["milestones"] == [150, 225]
    result = invoke("--preset", "custom", "--dry-run")  # never a --preset of its own
    assert result.exit_code == 1 and "--preset 'custom' is unknown" in result.output


def test_config_file_sits_between_the_preset_and_the_flags(tmp_path):
    path = tmp_path / "fields.json"
    path.write_text(json.dumps({"regularizer": "none", "epochs": 2, "milestones": [1]}))
    result = invoke("--config", str(path), "--epochs", "3", "--dry-run")
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)["config"]
    assert (cfg["preset"], cfg["regularizer"], cfg["epochs"], cfg["milestones"]) == (
        "mnist-toy", "none", 3, [1])  # fmt: skip
    assert cfg["lr"] == 3e-3  # the rest: the preset's
    # a run header of a `custom` (dataset, model) pair replays as itself
    custom = json.loads(invoke("--dataset", "cifar10", "--model", "resnet18", "--dry-run").stdout)
    header = tmp_path / "config.json"
    header.write_text(json.dumps({"tool": "robattr", "command": "train", **custom}))
    result = invoke("--config", str(header), "--lr", "0.5", "--dry-run")
    assert result.exit_code == 0, result.output
    replay = json.loads(result.stdout)
    assert replay["preset"] == "custom"
    assert replay["config"] == {**custom["config"], "lr": 0.5}
