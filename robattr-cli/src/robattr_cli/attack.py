"""`robattr attack`: attack the attribution maps of a trained classifier, save what it made.

Read top to bottom: `check` (the config, `config.AttackConfig`, and the files it names,
before a run folder exists), then `run`: rebuild the model from its checkpoint (its meta
carries dataset, mean/std, activation and the toy's data seed; `victim.py`), take the test
images, attack them batch by batch, and save into the run folder:

    attacked.safetensors   x, x_adv (normalised), y, pred (clean prediction), index
                           (test-set positions), h_clean, h_adv (maps on the real model)
    metrics.json           mean similarity of attacked to clean maps (+ attack extras)
    figures/attack.png     images, clean maps, attacked images, attacked maps

Which test images (`sample`, shared with `robattr eval` through `victim.iter_examples`):
- default, the official protocol (`test_taps_saps.py`, `test_rps.py` run `trainer.test`
  on the whole test loader): every test image, misclassified ones included, each
  explained for its true label;
- `correct_only`: only images the model classifies correctly (ART / Ghorbani protocol);
- `num_examples N`: the first N of either (quick runs).

The attack maths live in `manipulation.py`; this module is the loop around them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from labshared.console import log
from labshared.errors import ConfigError
from labshared.runs import atomic_save_safetensors, write_metrics
from labshared.stats import BootstrapSpec, interval
from labshared.training.progress import StepProgress
from robattr_cli import victim
from robattr_cli.attributions import heatmap
from robattr_cli.checks import validate_attack
from robattr_cli.config import AttackConfig
from robattr_cli.figures import save_attack_figure
from robattr_cli.manipulation import (
    attack_surrogate,
    frame_attack,
    frame_target,
    random_perturbation,
    rps_similarity,
    topk_attack,
)
from robattr_cli.metrics import default_topk, similarity_report


def check(cfg: AttackConfig) -> None:
    """Everything `run` reads, checked before a run folder is made: the config's values
    (`checks.validate_attack`) and the checkpoint and test split (`victim.check_victim`)."""
    validate_attack(cfg)
    victim.check_victim(cfg.checkpoint, cfg.which, cfg.data_root)


# --------------------------------------------------------------------------- the run
def run(cfg: AttackConfig, runtime, run_dir: Path) -> dict[str, Any]:
    """Attack, save tensors, metrics and a figure into `run_dir`; return the metrics."""
    validate_attack(cfg)
    device = runtime.device
    model, meta, dataset, box = victim.load_victim(cfg.checkpoint, cfg.which, cfg.data_root, device)
    generator = torch.Generator(device=device).manual_seed(runtime.seed)
    opts = victim.attribution_options(
        cfg.method, cfg.ig_steps, cfg.ig_rule, cfg.sg_samples, cfg.sg_noise, generator
    )
    surrogate = attack_surrogate(model, cfg.surrogate_beta)
    if surrogate is not model:
        log(f"{meta['activation']} model: attacking through a Softplus(beta={cfg.surrogate_beta})"
            " copy")  # fmt: skip
    hw = tuple(dataset[0][0].shape[-2:])
    k = cfg.k or default_topk(torch.zeros(1, *hw))
    target_map = frame_target(*hw).to(device)
    log(f"attack {cfg.attack}, method {cfg.method}, eps {cfg.budget}/255, k {k}, "
        f"on {meta['checkpoint']}")  # fmt: skip

    saved: dict[str, list[torch.Tensor]] = {}
    per_image: dict[str, list[torch.Tensor]] = {}
    total, done = victim.sample_size(dataset, cfg.num_examples), 0
    # a bar on a terminal; off it, a timestamped line with an ETA every few seconds
    with StepProgress(total, label=f"robattr attack {cfg.attack}", unit="img",
                      every=5.0) as progress:  # fmt: skip
        for x, y, index, pred in victim.iter_examples(
            model, dataset, cfg.num_examples, cfg.batch_size, device, cfg.correct_only
        ):  # pred: the fp32 decision the correct-only filter read (victim.predict)
            h_clean = heatmap(model, x, y, cfg.method, **opts).detach()
            x_adv, extras = perturb(
                cfg, model, surrogate, x, y, box, k=k, target_map=target_map, opts=opts,
                generator=generator,
            )  # fmt: skip
            h_adv = heatmap(model, x_adv, y, cfg.method, **opts).detach()
            pred_adv = victim.predict(model, x_adv)
            # label_kept: the prediction survived (official "acc_adv" is adv_accuracy)
            extras["label_kept"] = (pred_adv == pred).float()
            extras["clean_accuracy"] = (pred == y).float()
            extras["adv_accuracy"] = (pred_adv == y).float()
            report = similarity_report(h_adv, h_clean, k=k)
            if cfg.attack == "frame":
                frame = target_map.expand_as(h_adv)
                extras |= {
                    f"target_{m}": v
                    for m, v in similarity_report(h_adv, frame, rank_metrics=False).items()
                }
            if cfg.attack == "random":  # RPS: the mean over n_draws draws (one is saved)
                report = rps_similarity(
                    model, x, y, box, eps=cfg.budget, n_draws=cfg.n_draws,
                    noise_generator=generator, method=cfg.method, k=k, **opts,
                )  # fmt: skip
            for key, value in {**report, **extras}.items():
                per_image.setdefault(key, []).append(value.detach().cpu())
            batch = {"x": x, "x_adv": x_adv, "y": y, "pred": pred, "index": index,
                     "h_clean": h_clean, "h_adv": h_adv}  # fmt: skip
            for key, value in batch.items():
                saved.setdefault(key, []).append(value.detach().cpu())
            done += len(y)
            progress.update(done, status=f"pcc {float(report['pcc'].mean()):.3f}")
    if not saved:
        raise ConfigError(
            f"--checkpoint {cfg.checkpoint}: no test example to attack"
            + (" (the model classifies none correctly)" if cfg.correct_only else "")
        )
    tensors = {key: torch.cat(v) for key, v in saved.items()}
    file_meta = {"attack": cfg.attack, "method": cfg.method, "eps": cfg.budget}
    file_meta |= {"checkpoint": meta["checkpoint"], "dataset": meta["dataset"]}
    file_meta |= {"mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"])}
    atomic_save_safetensors(run_dir / victim.ATTACKED_FILE, tensors, file_meta)
    metrics = {
        "attack": cfg.attack,
        "method": cfg.method,
        "eps": cfg.budget,
        "k": k,
        "num_examples": int(tensors["y"].numel()),
        "sample": "correct" if cfg.correct_only else "all",
        "checkpoint": meta["checkpoint"],
        "similarity_to_clean": victim.mean_metrics(
            {k_: v for k_, v in per_image.items() if k_ in _SIM_KEYS}
        ),
        **{k_: float(torch.cat(v).mean()) for k_, v in per_image.items() if k_ not in _SIM_KEYS},
    }
    # 95 % bootstrap interval over the attacked images of each averaged figure (per image
    # rows: `robattr eval --attacked` on this run writes them, with every other measure)
    spec = BootstrapSpec(seed=runtime.seed)
    values = {(f"similarity_to_clean/{k_}" if k_ in _SIM_KEYS else k_): torch.cat(v).double()
              for k_, v in per_image.items()}  # fmt: skip
    metrics["intervals"] = {
        k_: interval(v.numpy(), spec=spec).as_list()
        for k_, v in values.items() if torch.isfinite(v).all()
    }  # fmt: skip
    metrics["bootstrap"] = spec.record("image")
    write_metrics(run_dir, metrics)
    save_attack_figure(
        run_dir / "figures" / "attack.png",
        tensors,
        meta,
        title=f"{cfg.attack} attack, {cfg.method}",
    )
    return metrics


def perturb(
    cfg: AttackConfig, model, surrogate, x, y, box, *, k, target_map, opts, generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The attacked inputs of one batch by `cfg.attack`, and the attack's own per-image
    extras (the top-k attack's count of rejected label-flipping iterates)."""
    if cfg.attack == "frame":
        x_adv = frame_attack(
            surrogate, x, y, box, eps=cfg.budget, n_iter=cfg.n_iter, gamma=cfg.gamma,
            optimizer=cfg.optimizer, step_size=cfg.step_size, method=cfg.method,
            target_map=target_map, **opts,
        )  # fmt: skip
        return x_adv, {}
    if cfg.attack == "topk":
        res = topk_attack(
            model, x, y, box, surrogate=surrogate, eps=cfg.budget, n_iter=cfg.n_iter,
            step_size=cfg.step_size, k=k, method=cfg.method, **opts,
        )  # fmt: skip
        return res.x_adv, {"rejected_iterates": res.rejected.float()}
    return random_perturbation(x, box, cfg.budget, generator), {}


_SIM_KEYS = ("mse", "pcc", "ssim", "cosine", "ssim_sumnorm", "topk", "spearman", "kendall")
