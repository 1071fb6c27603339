"""The RTD training hot path (issue 12 item 1): each speed-up leaves what is computed as it
was. Sequence cut, cached anchors, fused AdamW, SDPA attention, bf16 autocast of the
trainable tower, --grad-checkpointing and --compile, each against the plain path."""

import dataclasses
import json

import pytest
import torch

from labshared.config import resolve
from labshared.data.text_triplets import load_text_triplets
from labshared.device import Precision, Runtime
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli.rtd_step import StepSource, build_parts, cached_anchors, step_loss, tokenize_batch
from rtd_cli.tokens import triplet_tokens, triplets_digest
from rtd_cli.train import make_optimizer

CPU = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)


@pytest.fixture(scope="module")
def phi(tiny77):
    return tiny77.phi


def make(phi, **kw):
    """(cfg, parts) with the same random CLIP every time (seeded before building)."""
    overrides = dict(backbone="rtd-tiny77", pretrained="random", phi=str(phi), triplets="toy:64",
                     batch_size=6, lr=1e-3, noise_scale=0.5)  # fmt: skip
    overrides.update(kw)
    cfg = resolve(C.TRAIN_PRESETS, "toy", overrides, validate=C.validate_train)
    torch.manual_seed(0)
    return cfg, build_parts(cfg, CPU)[0]


def batch_of(n=6, start=0):
    return load_text_triplets("toy:64").triplets[start : start + n]


def assert_grads_close(got, want, rel=1e-4):
    """Gradients equal up to fp32 rounding of differently shaped sums: each tensor to
    `rel` of its largest entry (the positional embedding's are sums over the batch that
    largely cancel, so entry-wise relative tolerances would test the rounding itself)."""
    assert got.keys() == want.keys()
    for name, grad in want.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(got[name], grad, rtol=0, atol=rel * scale + 1e-12, msg=name)


def loss_and_grads(parts, cfg, batch, runtime=CPU):
    loss = step_loss(parts, batch, cfg, runtime, torch.Generator().manual_seed(5))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in parts.tower.named_parameters() if p.grad is not None}
    parts.tower.zero_grad(set_to_none=True)
    return loss.detach(), grads


# --------------------------------------------------------------------------- sequence cut
def test_cut_features_equal_the_full_length_encoding(phi):
    _, parts = make(phi)
    step = tokenize_batch(parts, batch_of())
    full_a, full_q = step.anchor_ids, step.query_ids
    cut_a, cut_q = M.cut_ids(full_a, parts.frozen), M.cut_ids(full_q, parts.tower)
    assert full_a.shape[1] == 77 and cut_a.shape[1] < 20 and cut_q.shape[1] < 20
    assert torch.equal(cut_a, full_a[:, : cut_a.shape[1]])
    with torch.no_grad():
        torch.testing.assert_close(parts.frozen(cut_a), parts.frozen(full_a), rtol=0, atol=1e-5)
    pseudo = torch.randn(len(full_q), parts.tower.width, generator=torch.Generator().manual_seed(1))
    parts.tower.train()  # the trainable tower as the step runs it, with and without the token
    for tokens in (None, pseudo):
        a = parts.tower(cut_q, pseudo_tokens=tokens, pseudo_token_id=parts.token_id)
        b = parts.tower(full_q, pseudo_tokens=tokens, pseudo_token_id=parts.token_id)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert (full_q == parts.token_id).any(dim=1).all()  # every query took the pseudo token


def test_the_cut_keeps_the_full_length_for_towers_it_would_change(phi):
    _, parts = make(phi)
    ids = tokenize_batch(parts, batch_of()).query_ids
    saved = parts.tower.attn_mask
    parts.tower.attn_mask = None  # bidirectional attention: later tokens change every output
    assert M.cut_ids(ids, parts.tower).shape[1] == 77
    parts.tower.attn_mask, parts.tower.pool_type = saved, "last"
    assert M.cut_ids(ids, parts.tower).shape[1] == 77
    parts.tower.pool_type = "argmax"


def test_step_loss_with_the_cut_equals_the_step_without(phi):
    cfg, parts = make(phi)
    step = tokenize_batch(parts, batch_of())
    cut_loss, cut_grads = loss_and_grads(parts, cfg, step)
    parts.cut = False
    full_loss, full_grads = loss_and_grads(parts, cfg, step)
    torch.testing.assert_close(cut_loss, full_loss, rtol=1e-6, atol=1e-6)
    assert_grads_close(cut_grads, full_grads)


# --------------------------------------------------------------------------- anchor cache
def test_cached_anchors_give_the_step_loss_of_the_frozen_forward(phi, tmp_path, monkeypatch):
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    cfg, parts = make(phi, cache_anchors=True)
    data = load_text_triplets("toy:64").triplets
    tokens = triplet_tokens(data, parts.tokenizer, parts.template, parts.symbol, parts.plain)
    key = triplets_digest(data)
    anchors = cached_anchors(parts, tokens, CPU, triplets_key=key, chunk=10)
    assert anchors.shape == (64, 2, 32)
    assert not list((tmp_path / "features").glob("rtd-anchors-*"))  # random weights: no cache
    rows = torch.tensor([5, 60, 0, 33, 12, 7])
    on_the_fly = StepSource(tokens).batch(rows)
    cached = StepSource(tokens, anchors).batch(rows)
    assert cached.anchor_ids is None and cached.anchors.shape == (12, 32)
    a, _ = loss_and_grads(parts, cfg, on_the_fly)
    b, _ = loss_and_grads(parts, cfg, cached)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # Weights with an identity are cached, and a second call reads the file.
    parts.clip_identity = {"backbone": "rtd-tiny77", "weights": {"sha256": "test"}}
    first = cached_anchors(parts, tokens, CPU, triplets_key=key, chunk=10)
    assert len(list((tmp_path / "features").glob("rtd-anchors-*.safetensors"))) == 1
    parts.frozen = None  # a recomputation would fail
    assert torch.equal(cached_anchors(parts, tokens, CPU, triplets_key=key, chunk=10), first)


# --------------------------------------------------------------------------- optimizer
def test_fused_adamw_ends_where_the_loop_does(phi):
    """Both optimizers apply the same three gradients (of three real steps) to the same
    start; only the update arithmetic differs (the fused kernel's operation order)."""
    cfg, parts = make(phi)
    params = [p for p in parts.tower.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    grads = []
    for i in range(3):
        step = tokenize_batch(parts, batch_of(start=6 * i))
        step_loss(parts, step, cfg, CPU, torch.Generator().manual_seed(i)).backward()
        grads.append([p.grad.clone() for p in params])
        parts.tower.zero_grad(set_to_none=True)
    fused = make_optimizer(params, cfg)
    assert fused.defaults["fused"] is True  # torch has a CPU kernel (>= 2.4)
    ends = []
    for opt in (fused, make_optimizer(params, cfg, fused=False)):
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
        ends.append([p.detach().clone() for p in params])
    moved = max(float((e - s).abs().max()) for e, s in zip(ends[1], start, strict=True))
    assert moved > 1e-3  # lr 1e-3 for 3 steps: the comparison is not between two no-ops
    for a, b in zip(*ends, strict=True):  # tolerance: a few fp32 ulps of lr-sized updates
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- attention
def test_the_trainable_forward_goes_through_sdpa(phi, tiny77, monkeypatch):
    cfg, parts = make(phi)
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    # nn.MultiheadAttention (open_clip 3.3's text blocks) calls the module-level name.
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    loss = step_loss(parts, tokenize_batch(parts, batch_of()), cfg, CPU, torch.Generator())
    loss.backward()
    layers = tiny77.cfg["text_cfg"]["layers"]
    trainable = [s for s in calls if s[0] == 12]  # (2B, heads, L, head_dim) per layer
    assert len(trainable) >= layers and all(s[1] == 4 for s in trainable)


# --------------------------------------------------------------------------- precision
def test_bf16_runs_the_trainable_tower_in_autocast_and_the_loss_in_fp32(phi):
    cfg, parts = make(phi)
    bf16 = dataclasses.replace(CPU, precision=Precision("bf16", torch.bfloat16, False))
    seen = []  # the dtype of the first MLP matmul of the trainable tower
    fc = parts.tower.transformer.resblocks[0].mlp.c_fc
    hook = fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    step = tokenize_batch(parts, batch_of())
    loss_bf16, grads = loss_and_grads(parts, cfg, step, bf16)
    loss_fp32, _ = loss_and_grads(parts, cfg, step)
    hook.remove()
    assert seen == [torch.bfloat16, torch.float32]
    assert loss_bf16.dtype == torch.float32 and all(
        g.dtype == torch.float32 for g in grads.values()
    )
    torch.testing.assert_close(loss_bf16, loss_fp32, rtol=3e-2, atol=3e-2)
    fp16 = dataclasses.replace(CPU, precision=Precision("fp16", torch.float16, True))
    seen.clear()
    fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    step_loss(parts, step, cfg, fp16, torch.Generator())
    assert seen == [torch.float32]  # fp16 would need a grad scaler: the tower stays fp32


# --------------------------------------------------------------------------- options
def test_grad_checkpointing_gives_the_same_loss_and_gradients(phi):
    cfg, parts = make(phi)
    step = tokenize_batch(parts, batch_of())
    plain = loss_and_grads(parts, cfg, step)
    cfg_gc, parts_gc = make(phi, grad_checkpointing=True)
    assert parts_gc.tower.transformer.grad_checkpointing
    checkpointed = loss_and_grads(parts_gc, cfg_gc, step)
    torch.testing.assert_close(checkpointed[0], plain[0], rtol=0, atol=1e-7)
    assert checkpointed[1].keys() == plain[1].keys()
    for name, grad in plain[1].items():
        torch.testing.assert_close(checkpointed[1][name], grad, rtol=1e-6, atol=1e-7)


def test_compile_flag_wires_through(phi):
    cfg, parts = make(phi, compile=True)
    assert cfg.compile and isinstance(parts.trainable, torch._dynamo.eval_frame.OptimizedModule)
    assert parts.trainable._orig_mod is parts.tower  # checkpoints hold the plain tower


@pytest.mark.slow
def test_compiled_tower_gives_the_same_loss_and_gradients(phi):
    cfg, parts = make(phi)
    cfg_c, parts_c = make(phi, compile=True)
    for start in (0, 6, 12):  # three cut lengths: the static graph, then the dynamic one
        step = tokenize_batch(parts, batch_of(start=start))
        plain = loss_and_grads(parts, cfg, step)
        compiled = loss_and_grads(parts_c, cfg_c, step)
        torch.testing.assert_close(compiled[0], plain[0], rtol=1e-5, atol=1e-6)
        assert_grads_close(compiled[1], plain[1])


def test_the_three_flags_set_their_fields():
    from typer.testing import CliRunner

    from rtd_cli.cli import app

    args = ["train", "--phi", "p.pt", "--triplets", "t.json", "--dry-run"]
    res = CliRunner().invoke(app, [*args, "--cache-anchors", "--compile", "--grad-checkpointing"])
    assert res.exit_code == 0, res.output
    config = json.loads(res.stdout)["config"]
    assert config["cache_anchors"] and config["compile"] and config["grad_checkpointing"]
    off = json.loads(CliRunner().invoke(app, args).stdout)["config"]
    assert not (off["cache_anchors"] or off["compile"] or off["grad_checkpointing"])


def test_train_runs_on_the_caches_and_a_second_run_reads_the_token_ids(phi, tmp_path, monkeypatch):
    from rtd_cli import tokens as T
    from rtd_cli.train import train

    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))
    cfg, _ = make(phi, steps=3, checkpoint_every=3, log_every=1)
    torch.manual_seed(0)
    plain = train(cfg, tmp_path / "plain", CPU)
    assert list((tmp_path / "cache" / "features").glob("rtd-token-ids-*.safetensors"))

    def refuse(*_a, **_k):
        raise AssertionError("tokenised again although the ids are cached")

    monkeypatch.setattr(T, "tokenize_ragged", refuse)
    torch.manual_seed(0)
    cached = train(dataclasses.replace(cfg, cache_anchors=True), tmp_path / "cached", CPU)
    assert cached["step"] == plain["step"] == 3
    for a, b in zip(plain["history"], cached["history"], strict=True):  # same run, to rounding
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
