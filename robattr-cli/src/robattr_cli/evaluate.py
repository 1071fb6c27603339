"""`robattr eval`: clean accuracy and attribution-robustness metrics of a trained model.

Read top to bottom (brief section 7, in this order):

1. clean accuracy on the whole test split;
2. on the test images (by default all of them, misclassified included, as the official
   test modules; `correct_only` and `num_examples` as in `robattr attack`), or on the
   images of an attack run (`--attacked RUN`): Random Perturbation Similarity (official
   `test_rps.py`: 10 draws of U(+-eps/255)/std, metrics of the perturbed against the
   clean map) at each eps of `rps_eps` (official default 4; the paper's set is 4, 8, 16);
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
    iter_examples,
    load_victim,
    mean_metrics,
    sample_size,
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
        num_examples: the first N test images (None: the whole split; ignored with
            `attacked`, which brings its own images).
        correct_only: only test images the model classifies correctly.
        batch_size: images per batch.
        rps_eps: RPS noise levels in pixels/255 (official 4; empty turns RPS off);
            n_draws: RPS draws per level (10).
        n_ratios: insertion ratios (official 20; 0 turns insertion off).
        k: top-k size for the intersection metric (None: 100 per 32x32 pixels, at most 1000).
        ig_steps, ig_rule, sg_samples, sg_noise: attribution settings.
    """

    checkpoint: str
    which: str = "last"
    data_root: str | None = None
    attacked: str | None = None
    method: str | None = None
    num_examples: int | None = None
    correct_only: bool = False
    batch_size: int = 50
    rps_eps: tuple[float, ...] = (4.0,)
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
    n_examples = 1 if cfg.num_examples is None else cfg.num_examples
    for flag, value in {"--num-examples": n_examples, "--batch-size": cfg.batch_size,
                        "--n-draws": cfg.n_draws, "--ig-steps": cfg.ig_steps,
                        "--sg-samples": cfg.sg_samples}.items():  # fmt: skip
        if not value > 0:
            raise ConfigError(f"{flag} {value}: must be > 0")
    if any(e <= 0 for e in cfg.rps_eps) or cfg.n_ratios < 0:
        eps = ",".join(f"{e:g}" for e in cfg.rps_eps)
        raise ConfigError(f"--rps-eps {eps} / --n-ratios {cfg.n_ratios}: must be > 0 / >= 0")
    from robattr_cli.model import resolve_checkpoint

    resolve_checkpoint(cfg.checkpoint, cfg.which)  # fail before a run folder is made
    if cfg.attacked is not None:
        path = Path(cfg.attacked)
        if not (path.is_file() or (path / ATTACKED_FILE).is_file()):
            raise ConfigError(
                f"--attacked {path}: no {ATTACKED_FILE} there; expected {ATTACKED_FORMAT}"
            )


def parse_eps_list(text: str | None) -> tuple[float, ...] | None:
    """'4,8,16' -> (4.0, 8.0, 16.0); '0' or '' -> () (RPS off); None -> None (default)."""
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(
            f"--rps-eps {text!r}: expected comma-separated budgets in pixels/255, e.g. 4,8,16"
        ) from None
    if values == (0.0,):
        return ()
    if any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--rps-eps {text!r}: expected distinct budgets > 0 (or 0 for off)")
    return values


ATTACKED_FORMAT = (
    f"a `robattr attack` run folder holding {ATTACKED_FILE} "
    "(safetensors with tensors x, x_adv, y of equal length)"
)


def load_attacked(run: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an attack run (`attacked.safetensors`).

    Args:
        run: the attack run folder, or its attacked.safetensors file.

    Raises:
        ConfigError: no such file, not a readable safetensors file, or tensors missing or
            of unequal length; the message names the file and the expected format.
    """
    from labshared.runs import read_safetensors

    path = Path(run)
    if path.is_dir():
        path = path / ATTACKED_FILE
    tensors, meta = read_safetensors(path, flag="--attacked", expected=ATTACKED_FORMAT)
    absent = [k for k in ("x", "x_adv", "y") if k not in tensors]
    if absent:
        raise ConfigError(
            f"--attacked {path}: tensors {', '.join(absent)} absent; expected {ATTACKED_FORMAT}"
        )
    x, x_adv, y = tensors["x"], tensors["x_adv"], tensors["y"]
    if x.shape != x_adv.shape or x.dim() != 4 or y.shape != (x.shape[0],):
        raise ConfigError(
            f"--attacked {path}: x {tuple(x.shape)}, x_adv {tuple(x_adv.shape)}, y "
            f"{tuple(y.shape)} do not fit together; expected {ATTACKED_FORMAT}"
        )
    return tensors, meta


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
    attacked, attack_meta = load_attacked(cfg.attacked) if cfg.attacked else ({}, {})
    model, meta, dataset, box = load_victim(cfg.checkpoint, cfg.which, cfg.data_root, device)
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
            for x, y, _ in iter_examples(
                model, dataset, cfg.num_examples, cfg.batch_size, device, cfg.correct_only
            )
        )
        total = sample_size(dataset, cfg.num_examples)

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
            with torch.no_grad():
                pred = model(x).argmax(1)
            add("sample", {"clean_accuracy": (pred == y).float()})
            for eps in cfg.rps_eps:
                add(f"rps/eps{eps:g}", rps_similarity(
                    model, x, y, box, eps=eps, n_draws=cfg.n_draws, noise_generator=generator,
                    method=method, k=k, **opts,
                ))  # fmt: skip
            if cfg.n_ratios > 0:
                add("insertion", {"curve": insertion_curve(model, x, y, h_clean, cfg.n_ratios)})
            if "x_adv" in batch:
                x_adv = batch["x_adv"]
                h_adv = heatmap(model, x_adv, y, method, **opts).detach()
                add("attack", similarity_report(h_adv, h_clean, k=k))
                with torch.no_grad():
                    pred_adv = model(x_adv).argmax(1)
                add("attack_extra", {"label_kept": (pred_adv == pred).float(),
                                     "adv_accuracy": (pred_adv == y).float()})  # fmt: skip
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
        raise ConfigError(
            f"--checkpoint {cfg.checkpoint}: no test example to evaluate"
            + (" (the model classifies none correctly)" if cfg.correct_only else "")
        )

    n_examples = int(torch.cat(figure["y"]).numel())
    metrics: dict[str, Any] = {
        "checkpoint": meta["checkpoint"],
        "dataset": meta["dataset"],
        "method": method,
        "clean_accuracy": accuracy,
        "num_test": len(dataset),
        "num_examples": n_examples,
        "sample": "attacked" if attacked else "correct" if cfg.correct_only else "all",
        "sample_clean_accuracy": mean_metrics(per["sample"])["clean_accuracy"],
        "k": k,
    }
    if cfg.rps_eps:
        metrics["rps"] = {"n_draws": cfg.n_draws} | {
            f"eps{eps:g}": mean_metrics(per[f"rps/eps{eps:g}"]) for eps in cfg.rps_eps
        }
    if attacked:
        metrics["attack"] = {
            "run": str(cfg.attacked),
            "attack": attack_meta.get("attack"),
            "eps": float(attack_meta.get("eps", "nan")),
            **mean_metrics(per["attack_extra"]),
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
