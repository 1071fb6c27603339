"""The toy CNN's starting weights: pretrained once on unbiased 10-way digit classification
of the toy world and cached content-keyed, the toy analogue of ImageNet weights (a CNN
trained from scratch on the biased toy data keeps almost no digit features; design.md)."""

from __future__ import annotations

import torch
from filelock import FileLock
from safetensors.torch import load_file
from torch import nn

from labshared import toy
from labshared.cache import cache_key, cache_root
from labshared.console import log
from labshared.runs import atomic_save_safetensors, atomic_write_json
from labshared.threads import pinned_threads
from tldr_cli.nets import Classifier, ToyCNN

# 8,000 fresh renders x 6 epochs: 0.975 digit accuracy on 2,000 toy test renders (held-out
# digit instances); 4,000 x 3 gave 0.850, too weak a stand-in for ImageNet features.
TOY_PRETRAIN = {
    "n": 8000,
    "epochs": 6,
    "lr": 0.05,
    "batch_size": 128,
    "seed": 0,
    "size": 32,
    "version": 3,
}


def pretrained_toy_backbone() -> dict[str, torch.Tensor]:
    """ToyCNN weights pretrained on unbiased 10-way digit classification of toy images
    (`labshared.toy.make_split`: every digit on every background and colour), fitted once
    and cached content-keyed (the analogue of ImageNet weights)."""
    spec = {"what": "tldr-toy-backbone", **TOY_PRETRAIN}
    path = cache_root() / "tldr" / f"toy-backbone-{cache_key(spec)}.safetensors"
    if path.is_file():
        log(f"[dim]cache hit: {path}[/dim]")
        return load_file(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        if path.is_file():
            return load_file(str(path))
        state, accuracy = _pretrain_toy_backbone()
        atomic_save_safetensors(path, state)
        atomic_write_json(
            path.with_suffix(".json"), {"spec": spec, "test_digit_accuracy": accuracy}
        )
        log(f"[dim]cache written: {path}[/dim]")
        return state


def _pretrain_toy_backbone() -> tuple[dict[str, torch.Tensor], float]:
    """(backbone weights, 10-way digit accuracy on 2,000 toy test renders), fitted at
    `labshared.threads.TOY_FIT_THREADS` threads whatever the caller set: the conv weight
    gradients are reduced per thread, so the weights (and every tldr demo figure after
    them) would otherwise depend on the thread count."""
    with pinned_threads():
        return _pretrain_toy_backbone_pinned()


def _pretrain_toy_backbone_pinned() -> tuple[dict[str, torch.Tensor], float]:
    p = TOY_PRETRAIN
    log(
        "pretraining the toy CNN on 10-way digit classification "
        f"({p['n']} images, {p['epochs']} epochs)"
    )
    data = toy.make_split("train", p["n"], size=p["size"], seed=p["seed"] + 101)
    x = (data.images.float() / 255.0 - 0.5) / 0.25
    y = data.digit
    gen = torch.Generator().manual_seed(p["seed"])
    torch.manual_seed(p["seed"])
    model = Classifier("toy-cnn", ToyCNN(), ToyCNN.feature_dim, 10)
    opt = torch.optim.SGD(
        model.parameters(), lr=p["lr"], momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    steps = p["epochs"] * (len(x) // p["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=steps)
    model.train()
    for _ in range(p["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // p["batch_size"]):
            idx = perm[i * p["batch_size"] : (i + 1) * p["batch_size"]]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    test = toy.make_split("test", 2000, size=p["size"], seed=p["seed"] + 7)
    with torch.no_grad():
        acc = (
            (model((test.images.float() / 255.0 - 0.5) / 0.25).argmax(1) == test.digit)
            .float()
            .mean()
        )
    log(f"toy CNN digit accuracy on 2000 toy test images: {acc:.3f}")
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}, float(acc)
