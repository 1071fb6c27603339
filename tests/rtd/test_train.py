"""rtd train: data order, layer selection, the RTD step (pairing, frozen parts), resume,
the CLI, and gathered negatives under 2-process gloo DDP."""

import json
import os
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from labshared.config import resolve
from labshared.data.text_triplets import TextTriplet
from labshared.device import Precision, Runtime
from labshared.errors import ConfigError
from labshared.training import BatchSampler
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli.cli import app
from rtd_cli.loss import target_anchored_contrastive_loss
from rtd_cli.rtd_step import (
    build_parts,
    query_prompts,
    select_trainable,
    step_loss,
    tokenize_batch,
)
from rtd_cli.tower_file import load_text_tower, read_text_tower_config
from rtd_cli.train import train

TINY = "rtd-train-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2},
}
CPU = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)

#: A hang guard for subprocess runs, not a speed requirement (no test asserts speed).
HANG_GUARD_S = 900


def register_tiny(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(root)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A registered tiny random CLIP and phi checkpoints for each base (no download)."""
    root = tmp_path_factory.mktemp("rtd-train")
    register_tiny(root / "cfg")
    torch.manual_seed(0)
    phis = {}
    for base in ("lincir", "pic2word"):
        phis[base] = root / f"phi-{base}.pt"
        M.save_projection(phis[base], M.build_projection(base, 32, 48), base)
    return root, phis


def tiny_cfg(phi: Path, **kw) -> C.TrainConfig:
    base = dict(backbone=TINY, pretrained="random", phi=str(phi), triplets="toy:64", steps=4,
                batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1)  # fmt: skip
    base.update(kw)
    return resolve(C.TRAIN_PRESETS, "toy", base, validate=C.validate_train)


# --------------------------------------------------------------------------- pieces
def test_batch_sampler_covers_each_epoch_once_and_splits_ranks():
    n, b = 10, 3
    single = BatchSampler(n, b * 2, seed=1)
    ranks = [BatchSampler(n, b, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(4):
        both = torch.cat([r.indices(step) for r in ranks])
        assert torch.equal(both, single.indices(step))
    stream = torch.cat([single.indices(s) for s in range(5)])  # 30 rows = 3 epochs
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(stream[:n], stream[n : 2 * n])  # reshuffled per epoch
    assert torch.equal(BatchSampler(n, 6, seed=1).indices(3), single.indices(3))  # stateless


def test_query_prompts():
    assert query_prompts("a photo of $ that {mod}", "$") == (
        "a photo of $ that {mod}",
        "a photo of $",
    )
    assert query_prompts("a photo of * , {mod}", "*")[1] == "a photo of *"
    with pytest.raises(ConfigError, match="must contain"):
        query_prompts("a photo of {mod}", "$")


def test_select_trainable(assets):
    clip_model, _, _ = M.build_clip(TINY, "random")
    tower = M.text_tower_from_clip(clip_model)
    names = select_trainable(tower, "transformer.resblocks.1,ln_final")
    assert names and all(n.startswith(("transformer.resblocks.1.", "ln_final.")) for n in names)
    assert not tower.token_embedding.weight.requires_grad
    assert tower.ln_final.weight.requires_grad
    assert len(select_trainable(tower, None)) == len(list(tower.parameters()))
    with pytest.raises(ConfigError, match="matches no text-tower parameter"):
        select_trainable(tower, "transformer.resblocks.9")


def test_step_pairs_queries_with_anchors_and_keeps_frozen_parts_frozen(assets):
    _, phis = assets
    cfg = tiny_cfg(phis["lincir"], noise_scale=0.0)
    torch.manual_seed(0)
    parts, _ = build_parts(cfg, CPU)
    batch = [TextTriplet("A red $seven on grass", "make it blue", "a blue seven on grass"),
             TextTriplet("a green one on wood", "put it on sky", "a green one on sky")]  # fmt: skip
    loss = step_loss(
        parts, tokenize_batch(parts, batch), cfg, CPU, torch.Generator().manual_seed(0)
    )
    # Independent recomputation of the official step with noise 0.
    tok = parts.tokenizer
    k = parts.frozen(tok(["a blue seven on grass", "a green one on sky",
                          "a red seven on grass", "a green one on wood"]))  # fmt: skip
    s = parts.projection(k[2:])
    q_ids = tok(["a photo of $ that make it blue", "a photo of $ that put it on sky",
                 "a photo of $", "a photo of $"])  # fmt: skip
    q = parts.trainable(q_ids, pseudo_tokens=torch.cat([s, s]), pseudo_token_id=259)
    expected = target_anchored_contrastive_loss(k, q, cfg.tau)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in parts.frozen.parameters())
    assert all(p.grad is None for p in parts.projection.parameters())
    assert parts.tower.ln_final.weight.grad is not None
    assert not parts.projection.training


def test_pic2word_base_uses_its_token(assets):
    _, phis = assets
    parts, _ = build_parts(tiny_cfg(phis["pic2word"], base="pic2word"), CPU)
    assert (parts.symbol, parts.token_id, parts.plain) == ("*", 265, "a photo of *")
    assert isinstance(parts.projection, M.Im2Text)
    # --prompt rtd: RTD's evaluation prompt for every base ("$", 259) with the IM2TEXT tokens.
    parts, _ = build_parts(tiny_cfg(phis["pic2word"], base="pic2word", prompt="rtd"), CPU)
    assert (parts.symbol, parts.token_id, parts.template) == ("$", 259, "a photo of $ that {mod}")


# --------------------------------------------------------------------------- runs
def test_train_writes_tower_and_resume_matches_uninterrupted(assets, tmp_path):
    _, phis = assets
    cfg = tiny_cfg(phis["lincir"], train_layers="transformer.resblocks.1,ln_final,text_projection")
    torch.manual_seed(0)
    full = train(cfg, tmp_path / "full", CPU)
    assert full["step"] == 4 and Path(full["text_tower"]).is_file()
    torch.manual_seed(0)
    part = train(cfg, tmp_path / "cut", CPU, stop_after=3)
    assert part == {"step": 3, "stopped": True, "loss": pytest.approx(part["loss"])}
    torch.manual_seed(0)
    resumed = train(cfg, tmp_path / "cut", CPU, resume=True)
    assert resumed["step"] == 4
    a = load_file(str(tmp_path / "full" / "text_tower.safetensors"))
    b = load_file(str(tmp_path / "cut" / "text_tower.safetensors"))
    assert a.keys() == b.keys() and all(k.startswith(("transformer.resblocks.1", "ln_final",
                                                      "text_projection")) for k in a)  # fmt: skip
    for key in a:  # bit for bit
        assert torch.equal(a[key], b[key]), key
    assert resumed["loss"] == full["loss"]
    # The saved tower differs from the base and reloads through rtd eval's loader.
    clip_model, _, _ = M.build_clip(TINY, "random")
    tower = load_text_tower(tmp_path / "full" / "text_tower.safetensors", clip_model, backbone=TINY)
    assert read_text_tower_config(tmp_path / "full")["step"] == 4
    assert torch.allclose(tower.ln_final.weight, a["ln_final.weight"])


def test_validation_and_keep_best(assets, tmp_path):
    _, phis = assets
    cfg = tiny_cfg(phis["lincir"], val_dataset="toy", val_every=2, keep_best="score")
    scores = iter([{"score": 1.0}, {"score": 0.5}])
    seen = []

    def validator(tower, step):
        assert not tower.training
        seen.append(step)
        return next(scores)

    out = train(cfg, tmp_path / "run", CPU, validator=validator)
    assert seen == [2, 4]
    assert out["best"] == {"metric": "score", "value": 1.0, "step": 2}
    assert read_text_tower_config(tmp_path / "run" / "best")["step"] == 2
    assert read_text_tower_config(tmp_path / "run")["step"] == 4  # fixed-step model


def test_cli_dry_run_and_errors(assets, tmp_path):
    _, phis = assets
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--dry-run", "--phi", "x.pt", "--triplets", "t.json",
                              "--steps", "7", "--gather-negatives"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["config"]
    assert cfg["steps"] == 7 and cfg["gather_negatives"] and cfg["lr"] == 1e-5
    assert cfg["batch_size"] == 128 and cfg["seed"] == 12345 and cfg["noise_scale"] == 0.5
    res = runner.invoke(app, ["train", "--triplets", "toy"])
    assert res.exit_code == 1 and "--phi is required" in res.output
    res = runner.invoke(app, ["train", "--preset", "rtd-vit-l1", "--phi", "x"])
    assert res.exit_code == 1 and "did you mean 'rtd-vit-l14'" in res.output
    res = runner.invoke(app, ["train", "--preset", "paper", "--phi", "x"])
    assert res.exit_code == 1 and "renamed" in res.output and "rtd-vit-l14" in res.output


def test_cli_end_to_end(assets, tmp_path):
    _, phis = assets
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--preset", "toy", "--backbone", TINY, "--pretrained",
                                   "random", "--phi", str(phis["pic2word"]), "--base", "pic2word",
                                   "--triplets", "toy:40", "--steps", "2", "--batch-size", "4",
                                   "--toy-seed", "2", "-o", str(out),
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["step"] == 2 and Path(summary["text_tower"]).is_file()
    saved = json.loads((out / "config.json").read_text())
    assert (saved["tool"], saved["command"], saved["preset"]) == ("rtd", "train", "toy")
    assert saved["config"]["base"] == "pic2word" and saved["runtime"]["seed"] == 12345
    # one process: the global batch is the batch, nothing averaged, as the preset designs
    runtime = saved["runtime"]
    assert (runtime["global_batch"], runtime["gradients_averaged"]) == (4, False)
    assert runtime["preset_processes"] == 1 and "designed for" not in res.output
    # the toy seed drew the triplets; the training seed stays the preset's
    data = json.loads((out / "data.json").read_text())
    assert data["used"] == 40 and data["source"] == "toy:40 (toy seed 2)"
    assert (saved["config"]["toy_seed"], saved["config"]["seed"]) == (2, 12345)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["triplets"] == data


TOY_TRAIN = ["train", "--preset", "toy", "--backbone", TINY, "--pretrained", "random",
             "--steps", "3", "--batch-size", "4", "--checkpoint-every", "1",
             "--device", "cpu"]  # fmt: skip


def test_cli_a_failed_check_leaves_no_folder_and_the_corrected_rerun_works(assets, tmp_path):
    _, phis = assets
    out = tmp_path / "run"
    train = [*TOY_TRAIN, "--phi", str(phis["lincir"]), "-o", str(out)]
    res = CliRunner().invoke(app, [*train, "--triplets", str(tmp_path / "missing.json")])
    assert res.exit_code == 1 and "missing.json" in res.output and not out.exists()
    res = CliRunner().invoke(app, [*train, "--triplets", "toy:40", "--val-dataset", "cirrr"])
    assert res.exit_code == 1 and "--val-dataset 'cirrr' is unknown" in res.output
    assert "did you mean 'cirr'" in res.output and not out.exists()
    res = CliRunner().invoke(app, [*train, "--triplets", "toy:40", "--val-dataset", "cirr",
                                   "--val-root", str(tmp_path / "no-such-folder")])  # fmt: skip
    assert res.exit_code == 1 and "no-such-folder" in res.output and not out.exists()
    res = CliRunner().invoke(app, [*train, "--triplets", "toy:40"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["step"] == 3


def test_cli_resume_refuses_a_changed_field_but_not_a_runtime_knob(assets, tmp_path):
    _, phis = assets
    out = tmp_path / "run"
    train = [*TOY_TRAIN, "--phi", str(phis["lincir"]), "--triplets", "toy:40", "-o", str(out)]
    res = CliRunner().invoke(app, [*train, "--stop-after", "1"])
    assert res.exit_code == 0 and json.loads(res.stdout[res.stdout.index("{") :])["stopped"]
    res = CliRunner().invoke(app, [*train, "--lr", "5e-4", "--resume"])
    assert res.exit_code == 1 and "lr: saved 0.0001, now 0.0005" in res.output
    # how it logs and how the step executes (recomputed activations) only
    res = CliRunner().invoke(
        app, [*train, "--log-every", "2", "--grad-checkpointing", "--resume", "--stop-after", "1"]
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*train, "--cache-anchors", "--resume"])
    assert res.exit_code == 0, res.output
    header = json.loads((out / "config.json").read_text())
    assert len(header["resumed_at"]) == 2 and header["config"]["log_every"] == 5
    assert json.loads((out / "metrics.json").read_text())["step"] == 3


# --------------------------------------------------------------------------- DDP
def _ddp_grads(rank: int, world: int, port: int, root: str, gather: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from labshared import distributed
    from labshared.device import setup_runtime

    register_tiny(Path(root) / "cfg")
    runtime = setup_runtime("cpu", "fp32", 0)
    torch.manual_seed(0)  # same random CLIP on every rank
    cfg = tiny_cfg(Path(root) / "phi-lincir.pt", noise_scale=0.0, gather_negatives=gather)
    parts, _ = build_parts(cfg, runtime)
    batch = _batch()[rank * 2 : rank * 2 + 2]
    from rtd_cli.rtd_step import grad_scale

    loss = step_loss(parts, tokenize_batch(parts, batch), cfg, runtime, torch.Generator())
    (loss * grad_scale(cfg, runtime)).backward()
    if rank == 0:
        tower = distributed.unwrap(parts.trainable)
        torch.save({n: p.grad for n, p in tower.named_parameters()}, out)
    distributed.cleanup()


def _batch():
    return [TextTriplet("a red seven on grass", "make it blue", "a blue seven on grass"),
            TextTriplet("a green one on wood", "put it on sky", "a green one on sky"),
            TextTriplet("a blue two on sand", "make it a three", "a blue three on sand"),
            TextTriplet("a pink four on sky", "paint it red", "a red four on sky")]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("gather", [True, False])
def test_gathered_negatives_give_the_global_batch_gradient(assets, tmp_path, gather, free_port):
    root, _ = assets
    import torch.multiprocessing as mp

    out = tmp_path / "grads.pt"
    mp.spawn(_ddp_grads, args=(2, free_port, str(root), gather, str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    cfg = tiny_cfg(root / "phi-lincir.pt", noise_scale=0.0)
    parts, _ = build_parts(cfg, CPU)
    step_loss(parts, tokenize_batch(parts, _batch()), cfg, CPU, torch.Generator()).backward()
    ref = {n: p.grad for n, p in parts.trainable.named_parameters()}
    name = "transformer.resblocks.0.attn.in_proj_weight"
    if gather:  # one global loss over 2 x 2 triplets == single process with 4 triplets
        for n in ref:
            torch.testing.assert_close(ddp[n], ref[n], rtol=1e-3, atol=1e-5)
    else:  # per-GPU negatives (the paper): a different objective, a different gradient
        assert not torch.allclose(ddp[name], ref[name], rtol=1e-3, atol=1e-6)


LINEAR_WORKER = """
import os, sys
import torch
from labshared import distributed
from labshared.device import setup_runtime
from rtd_cli.config import TrainConfig
from rtd_cli.loss import target_anchored_contrastive_loss
from rtd_cli.rtd_step import grad_scale

rt = setup_runtime("cpu", "fp32", seed=0)
torch.manual_seed(0)
net = distributed.wrap_ddp(torch.nn.Linear(5, 3), rt.device)
g = torch.Generator().manual_seed(3)
x, k = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
rows = slice(rt.rank * 3, rt.rank * 3 + 3)
q = net(x[rows])
loss = target_anchored_contrastive_loss(
    distributed.all_gather(k[rows]), distributed.all_gather(q, differentiable=True)
)
(loss * grad_scale(TrainConfig(gather_negatives=True), rt)).backward()
if rt.rank == 0:
    torch.save(distributed.unwrap(net).weight.grad, sys.argv[1])
distributed.cleanup()
"""


def test_gathered_negatives_fast_linear_variant(tmp_path, free_port):
    """The gather + grad_scale logic of `rtd train` on a linear 'query tower' under
    torchrun (2 gloo processes): equals one process holding the whole batch."""
    import subprocess
    import sys

    script, out = tmp_path / "worker.py", tmp_path / "g.pt"
    script.write_text(LINEAR_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port), str(script),
           str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    g = torch.Generator().manual_seed(3)
    x, k = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
    target_anchored_contrastive_loss(k, net(x)).backward()
    torch.testing.assert_close(torch.load(out, weights_only=True), net.weight.grad)


CLI_WORKER = """
import json, sys
from pathlib import Path
import open_clip, torch
root = Path(sys.argv[1])
open_clip.add_model_config(root / "cfg")
torch.manual_seed(0)
from rtd_cli.cli import app
app(["train", "--preset", "toy", "--backbone", "rtd-train-tiny", "--pretrained", "random",
     "--phi", str(root / "phi-lincir.pt"), "--triplets", "toy:32", "--steps", "3",
     "--batch-size", "2", "--checkpoint-every", "2", "--gather-negatives", "--device", "cpu",
     "-o", str(root / "ddp-run")], standalone_mode=False)
"""


@pytest.mark.slow
def test_rtd_train_under_torchrun_two_processes(assets, free_port):
    """`rtd train` end to end under torchrun (2 gloo processes): one run folder, checkpoints
    with one generator state per rank, the final tower."""
    import subprocess
    import sys

    root, _ = assets
    script = root / "cli_worker.py"
    script.write_text(CLI_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port), str(script),
           str(root)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "ddp-run"
    assert (run / "text_tower.safetensors").is_file()
    runtime = json.loads((run / "config.json").read_text())["runtime"]
    assert runtime["world_size"] == 2 and runtime["global_batch"] == 4
    assert runtime["gradients_averaged"] is True and runtime["preset_processes"] == 1
    # the toy preset is designed for one process: one line names the global batch
    assert (
        "preset toy is designed for 1 process(es) (global batch 2 = 1 x 2); this run "
        "has 2: global batch 4 = 2 x 2, gradients averaged" in " ".join(proc.stderr.split())
    )
    state = torch.load(run / "checkpoints" / "step-00000003" / "state.pt", weights_only=True)
    noise = [rank["generators"]["noise"] for rank in state["ranks"]]
    assert len(noise) == 2 and not torch.equal(*noise)
    assert sorted(p.name for p in (run.parent).iterdir() if p.name.startswith("ddp-run")) == [
        "ddp-run"
    ]
