"""`robattr eval`: clean accuracy and attribution-robustness metrics of a trained model.

Read top to bottom (brief section 7, in this order):

1. clean accuracy on the whole test split;
2. on the first `num_examples` clean-correct test images (or on the images of an attack
   run, `--attacked RUN`): Random Perturbation Similarity (official `test_rps.py`: 10
   draws of U(+-eps/255)/std, metrics of the perturbed against the clean map);
3. with `--attacked`: similarity of the attacked maps to the clean maps (and to the frame
   target for the frame attack), and the fraction of attacked inputs that kept their label;
4. insertion / AOPC (official `test_insertion.py`, 20 ratios) on the clean maps and, with
   `--attacked`, Adv-Insertion (clean image, pixels ranked by the attacked map,
   official `test_adv_insertion.py`).

Writes metrics.json, figures/eval.png, and returns the metrics (the CLI prints a table).
Maps are recomputed here with the chosen method (default: the attack run's), so an
attack made against one attribution method can be evaluated with another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labshared.console import log, make_progress
from labshared.errors import ConfigError
from labshared.runs import write_metrics
from robattr_cli.attack import (
    ATTACKED_FILE,
    attribution_options,
    iter_clean_correct,
    load_victim,
    mean_metrics,
)
from robattr_cli.attacks import frame_target, rps_similarity
from robattr_cli.attributions import INTEGRATION_RULES, check_method, heatmap
from robattr_cli.metrics import aopc, default_topk, insertion_curve, similarity_report


@dataclass(frozen=True)
class EvalConfig:
    """One `robattr eval` run (saved in config.json).

    Attributes:
        checkpoint, which, data_root: the model (as in `robattr attack`).
        attacked: an attack run folder (holding attacked.safetensors) or None.
        method: attribution method (None: the attack run's, else grad).
        num_examples: clean-correct test images (ignored with `attacked`: its images).
        batch_size: images per batch.
        rps_eps: RPS noise in pixels/255 (0 turns RPS off); n_draws: RPS draws (10).
        n_ratios: insertion ratios (official 20; 0 turns insertion off).
        k: top-k size for the intersection metric (None: 100 per 32x32 pixels, at most 1000).
        ig_steps, ig_rule, sg_samples, sg_noise: attribution settings.
    """

    checkpoint: str
    which: str = "last"
    data_root: str | None = None
    attacked: str | None = None
    method: str | None = None
    num_examples: int = 100
    batch_size: int = 50
    rps_eps: float = 8.0
    n_draws: int = 10
    n_ratios: int = 20
    k: int | None = None
    ig_steps: int = 50
    ig_rule: str = "riemann_trapezoid"
    sg_samples: int = 50
    sg_noise: float = 0.1


def validate(cfg: EvalConfig) -> None:
    """Check every field before loading anything; raises ConfigError naming the flag."""
    if cfg.method is not None:
        check_method(cfg.method)
    if cfg.ig_rule not in INTEGRATION_RULES:
        raise ConfigError(
            f"--ig-rule {cfg.ig_rule!r}: expected one of {', '.join(INTEGRATION_RULES)}"
        )
    for flag, value in {"--num-examples": cfg.num_examples, "--batch-size": cfg.batch_size,
                        "--n-draws": cfg.n_draws, "--ig-steps": cfg.ig_steps,
                        "--sg-samples": cfg.sg_samples}.items():  # fmt: skip
        if not value > 0:
            raise ConfigError(f"{flag} {value}: must be > 0")
    if cfg.rps_eps < 0 or cfg.n_ratios < 0:
        raise ConfigError(f"--rps-eps {cfg.rps_eps} / --n-ratios {cfg.n_ratios}: must be >= 0")
    if cfg.attacked is not None and not (Path(cfg.attacked) / ATTACKED_FILE).is_file():
        raise ConfigError(
            f"--attacked {cfg.attacked}: no {ATTACKED_FILE} there; pass a `robattr attack` run folder"
        )


def load_attacked(run: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an attack run (`attacked.safetensors`)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(run) / ATTACKED_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), meta


@torch.no_grad()
def clean_accuracy(model, dataset, batch_size: int, runtime) -> float:
    """Top-1 accuracy over the whole split (autocast on GPU)."""
    from torch.utils.data import DataLoader

    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, y = x.to(runtime.device), y.to(runtime.device)
        with runtime.autocast():
            correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def _batches(tensors: dict[str, torch.Tensor], batch_size: int, device: torch.device):
    for start in range(0, tensors["y"].numel(), batch_size):
        yield {k: v[start : start + batch_size].to(device) for k, v in tensors.items()}


def run_eval(cfg: EvalConfig, runtime, run_dir: Path) -> dict[str, Any]:
    """Evaluate, write metrics.json and figures/eval.png into `run_dir`; return metrics."""
    validate(cfg)
    device = runtime.device
    model, meta, dataset, box = load_victim(cfg.checkpoint, cfg.which, cfg.data_root, device)
    attacked, attack_meta = load_attacked(cfg.attacked) if cfg.attacked else ({}, {})
    if attacked and attack_meta.get("dataset") not in (None, meta["dataset"]):
        raise ConfigError(
            f"--attacked {cfg.attacked} holds {attack_meta['dataset']} images but the model "
            f"was trained on {meta['dataset']}"
        )
    if attacked and attack_meta.get("checkpoint") != meta["checkpoint"]:
        log(f"note: the attack was made on {attack_meta.get('checkpoint')} (transfer evaluation)")
    method = cfg.method or attack_meta.get("method", "grad")
    generator = torch.Generator(device=device).manual_seed(runtime.seed)
    opts = attribution_options(
        method, cfg.ig_steps, cfg.ig_rule, cfg.sg_samples, cfg.sg_noise, generator
    )

    accuracy = clean_accuracy(model, dataset, cfg.batch_size, runtime)
    log(f"clean accuracy {accuracy:.4f} on {len(dataset)} test images")
    hw = tuple(dataset[0][0].shape[-2:])
    k = cfg.k or default_topk(torch.zeros(1, *hw))
    if attacked:
        batches = _batches(
            {key: attacked[key] for key in ("x", "x_adv", "y")}, cfg.batch_size, device
        )
        total = int(attacked["y"].numel())
    else:
        batches = (
            {"x": x, "y": y}
            for x, y, _ in iter_clean_correct(
                model, dataset, cfg.num_examples, cfg.batch_size, device
            )
        )
        total = cfg.num_examples

    per: dict[str, dict[str, list[torch.Tensor]]] = {}
    figure: dict[str, list[torch.Tensor]] = {}

    def add(group: str, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            per.setdefault(group, {}).setdefault(key, []).append(value.detach().cpu())

    with make_progress() as progress:
        task = progress.add_task("eval", total=total, status="")
        for batch in batches:
            x, y = batch["x"], batch["y"]
            h_clean = heatmap(model, x, y, method, **opts).detach()
            parts = {"x": x, "y": y, "h_clean": h_clean}
            if cfg.rps_eps > 0:
                add("rps", rps_similarity(model, x, y, box, eps=cfg.rps_eps, n_draws=cfg.n_draws,
                                          noise_generator=generator, method=method, k=k, **opts))  # fmt: skip
            if cfg.n_ratios > 0:
                add("insertion", {"curve": insertion_curve(model, x, y, h_clean, cfg.n_ratios)})
            if "x_adv" in batch:
                x_adv = batch["x_adv"]
                h_adv = heatmap(model, x_adv, y, method, **opts).detach()
                add("attack", similarity_report(h_adv, h_clean, k=k))
                with torch.no_grad():
                    add("attack_extra", {"label_kept": (model(x_adv).argmax(1) == y).float()})
                if attack_meta.get("attack") == "frame":
                    frame = frame_target(*hw).to(h_adv).expand_as(h_adv)
                    add("attack_to_target", similarity_report(h_adv, frame, rank_metrics=False))
                if cfg.n_ratios > 0:
                    add(
                        "adv_insertion",
                        {"curve": insertion_curve(model, x, y, h_adv, cfg.n_ratios)},
                    )
                parts |= {"x_adv": x_adv, "h_adv": h_adv}
            for key, value in parts.items():
                figure.setdefault(key, []).append(value.detach().cpu())
            progress.advance(task, len(y))
    if not figure:
        raise ConfigError(f"{cfg.checkpoint}: no clean-correct test example to evaluate")

    n_examples = int(torch.cat(figure["y"]).numel())
    metrics: dict[str, Any] = {
        "checkpoint": meta["checkpoint"],
        "dataset": meta["dataset"],
        "method": method,
        "clean_accuracy": accuracy,
        "num_test": len(dataset),
        "num_examples": n_examples,
        "k": k,
    }
    if "rps" in per:
        metrics["rps"] = {"eps": cfg.rps_eps, "n_draws": cfg.n_draws, **mean_metrics(per["rps"])}
    if attacked:
        metrics["attack"] = {
            "run": str(cfg.attacked),
            "attack": attack_meta.get("attack"),
            "eps": float(attack_meta.get("eps", "nan")),
            "label_kept": mean_metrics(per["attack_extra"])["label_kept"],
            "similarity_to_clean": mean_metrics(per["attack"]),
        }
        if "attack_to_target" in per:
            metrics["attack"]["similarity_to_target"] = mean_metrics(per["attack_to_target"])
    for group in ("insertion", "adv_insertion"):
        if group in per:
            curve = torch.cat(per[group]["curve"])  # (N, R)
            metrics[group] = {"aopc": float(aopc(curve).mean()), "curve": curve.mean(0).tolist()}
    from robattr_cli.figures import save_attack_figure

    tensors = {key: torch.cat(v) for key, v in figure.items()}
    save_attack_figure(run_dir / "figures" / "eval.png", tensors, meta, title=f"eval, {method}")
    write_metrics(run_dir, metrics)
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """A plain two-column table of the scalar metrics (nested keys joined by '/')."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else key, sub)
        elif isinstance(value, float):
            rows.append((prefix, f"{value:.4f}"))
        elif isinstance(value, int | str) and not prefix.endswith("checkpoint"):
            rows.append((prefix, str(value)))

    walk("", {k: v for k, v in metrics.items() if k != "curve"})
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
