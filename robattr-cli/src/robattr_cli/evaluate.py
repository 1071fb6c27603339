"""`robattr eval`: clean accuracy and attribution-robustness metrics of a trained model.

Read top to bottom (brief section 7, in this order):

1. clean accuracy on the whole test split, from its fp32 predictions (`victim.predict`),
   which the correct-only filter and each image's `clean_accuracy` then read;
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

`check` runs before the run folder exists; `run` writes metrics.json, figures/eval.png,
and returns the metrics (the command prints them with `tables.format_table`). The model, its test
split and the sample come from `victim.py`, as for `robattr attack`.
Maps are recomputed here with the chosen method (default: the attack run's), so an
attack made against one attribution method can be evaluated with another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from labshared.console import log
from labshared.errors import ConfigError
from labshared.items import write_items
from labshared.runs import read_safetensors, write_metrics
from labshared.stats import BootstrapSpec, interval
from labshared.training.progress import StepProgress
from robattr_cli.attributions import heatmap
from robattr_cli.checks import validate_eval
from robattr_cli.config import EvalConfig
from robattr_cli.figures import save_attack_figure
from robattr_cli.manipulation import frame_target, rps_similarity
from robattr_cli.metrics import aopc, default_topk, insertion_curve, similarity_report
from robattr_cli.victim import (
    ATTACKED_FILE,
    attribution_options,
    check_victim,
    iter_examples,
    load_victim,
    mean_metrics,
    predict,
    sample_size,
    split_predictions,
)

#: the per-image table of every eval run: items/images.parquet
ITEMS = "images"


def check(cfg: EvalConfig) -> None:
    """Everything `run` reads, checked before a run folder is made: the config's values
    (`checks.validate_eval`), the checkpoint (`victim.check_victim`) and the attack run's
    file."""
    validate_eval(cfg)
    if cfg.attacked is not None:
        path = Path(cfg.attacked)
        if not (path.is_file() or (path / ATTACKED_FILE).is_file()):
            raise ConfigError(
                f"--attacked {path}: no {ATTACKED_FILE} there; expected {ATTACKED_FORMAT}"
            )
        load_attacked(path, header_only=True)  # a corrupt or foreign file is refused here
    check_victim(cfg.checkpoint, cfg.which, cfg.data_root)


ATTACKED_FORMAT = (
    f"a `robattr attack` run folder holding {ATTACKED_FILE} "
    "(safetensors with tensors x, x_adv, y of equal length)"
)


def load_attacked(
    run: str | Path, header_only: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of an attack run (`attacked.safetensors`).

    Args:
        run: the attack run folder, or its attacked.safetensors file.
        header_only: read only the header and check names and shapes (returns shapes).

    Raises:
        ConfigError: no such file, not a readable safetensors file, or tensors missing or
            of unequal length; the message names the file and the expected format.
    """
    path = Path(run)
    if path.is_dir():
        path = path / ATTACKED_FILE
    tensors, meta = read_safetensors(
        path, flag="--attacked", expected=ATTACKED_FORMAT, header_only=header_only
    )
    absent = [k for k in ("x", "x_adv", "y") if k not in tensors]
    if absent:
        raise ConfigError(
            f"--attacked {path}: tensors {', '.join(absent)} absent; expected {ATTACKED_FORMAT}"
        )
    x, x_adv, y = (tuple(getattr(tensors[k], "shape", tensors[k])) for k in ("x", "x_adv", "y"))
    if x != x_adv or len(x) != 4 or y != (x[0],):
        raise ConfigError(
            f"--attacked {path}: x {x}, x_adv {x_adv}, y {y} do not fit together; "
            f"expected {ATTACKED_FORMAT}"
        )
    return tensors, meta


def split_labels(dataset, batch_size: int) -> torch.Tensor:
    """(N,) labels of the split in dataset order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    return torch.cat([y for _, y in loader])


def run(cfg: EvalConfig, runtime, run_dir: Path) -> dict[str, Any]:
    """Evaluate, write metrics.json and figures/eval.png into `run_dir`; return metrics."""
    validate_eval(cfg)
    device = runtime.device
    attacked, attack_meta = load_attacked(cfg.attacked) if cfg.attacked else ({}, {})
    model, meta, dataset, box = load_victim(cfg.checkpoint, cfg.which, cfg.data_root, device)
    if attacked:
        check_attack_fits(cfg, attack_meta, meta)
    method = cfg.method or attack_meta.get("method", "grad")
    generator = torch.Generator(device=device).manual_seed(runtime.seed)
    opts = attribution_options(
        method, cfg.ig_steps, cfg.ig_rule, cfg.sg_samples, cfg.sg_noise, generator
    )

    # "correct" is decided here, once, in fp32; the sample's filter, pred and the per-image
    # clean accuracy (its bootstrap interval) all read it
    predictions = split_predictions(model, dataset, cfg.batch_size, device)
    correct = (predictions == split_labels(dataset, cfg.batch_size)).float()
    accuracy = float(correct.mean())
    log(f"clean accuracy {accuracy:.4f} on {len(dataset)} test images")
    hw = tuple(dataset[0][0].shape[-2:])
    k = cfg.k or default_topk(torch.zeros(1, *hw))
    # the frame attack's target map, to score how close the attacked maps came to it
    target = frame_target(*hw).to(device) if attack_meta.get("attack") == "frame" else None
    batches, total = sample_batches(cfg, attacked, model, dataset, device, predictions)

    per: dict[str, dict[str, list[torch.Tensor]]] = {}
    figure: dict[str, list[torch.Tensor]] = {}
    done = 0
    with StepProgress(total, label="robattr eval", unit="img", every=5.0) as progress:
        for batch in batches:
            groups, parts = score_batch(
                model, batch, box, cfg, method=method, opts=opts, generator=generator, k=k,
                target=target,
            )  # fmt: skip
            for group, values in groups.items():
                for key, value in values.items():
                    per.setdefault(group, {}).setdefault(key, []).append(value.detach().cpu())
            for key, value in parts.items():
                figure.setdefault(key, []).append(value.detach().cpu())
            figure.setdefault("index", []).append(batch["index"].cpu())
            done += len(batch["y"])
            progress.update(done)
    if not figure:
        raise ConfigError(
            f"--checkpoint {cfg.checkpoint}: no test example to evaluate"
            + (" (the model classifies none correctly)" if cfg.correct_only else "")
        )

    metrics: dict[str, Any] = {
        "checkpoint": meta["checkpoint"],
        "dataset": meta["dataset"],
        "method": method,
        "clean_accuracy": accuracy,
        "num_test": len(dataset),
        "num_examples": int(torch.cat(figure["y"]).numel()),
        "sample": "attacked" if attacked else "correct" if cfg.correct_only else "all",
        "sample_clean_accuracy": mean_metrics(per["sample"])["clean_accuracy"],
        "k": k,
        **summarise(cfg, per, attack_meta),
    }
    tensors = {key: torch.cat(v) for key, v in figure.items()}
    values = per_image_values(per)
    spec = BootstrapSpec(seed=runtime.seed)
    metrics["intervals"] = {"clean_accuracy": interval(correct.numpy(), spec=spec).as_list()}
    metrics["intervals"] |= {  # a measure undefined on some image (NaN) gets none
        k: interval(v, spec=spec).as_list() for k, v in values.items() if np.isfinite(v).all()
    }
    metrics["bootstrap"] = spec.record("image")
    items = write_image_items(run_dir, tensors["index"], tensors["y"], values)
    metrics["items"] = str(items.relative_to(run_dir))
    save_attack_figure(run_dir / "figures" / "eval.png", tensors, meta, title=f"eval, {method}")
    write_metrics(run_dir, metrics)
    return metrics


def _metric_name(group: str, key: str) -> str:
    """The metrics.json path of a per-image measure (`summarise`'s layout)."""
    if group == "sample":
        return "sample_clean_accuracy"
    if group in ("insertion", "adv_insertion"):
        return f"{group}/aopc"
    prefix = {"attack": "attack/similarity_to_clean", "attack_extra": "attack",
              "attack_to_target": "attack/similarity_to_target"}.get(group, group)  # fmt: skip
    return f"{prefix}/{key}"


def per_image_values(per: dict[str, dict[str, list[torch.Tensor]]]) -> dict[str, np.ndarray]:
    """{metrics.json path: (N,) per-image values} of every averaged measure (insertion
    curves as each image's AOPC); the mean of each is the figure in metrics.json."""
    out = {}
    for group, values in per.items():
        for key, chunks in values.items():
            v = torch.cat(chunks).double()
            out[_metric_name(group, key)] = (aopc(v) if key == "curve" else v).numpy()
    return out


def write_image_items(run_dir: Path, index: torch.Tensor, y: torch.Tensor,
                      values: dict[str, np.ndarray]) -> Path:  # fmt: skip
    """`items/images.parquet`, one row per (image, metric): image (its index in the test
    split), label, metric (the metrics.json path), value."""
    n = len(y)
    names = list(values)
    cols = {
        "image": np.tile(index.numpy().astype(np.int64), len(names)),
        "label": np.tile(y.numpy().astype(np.int64), len(names)),
        "metric": [m for m in names for _ in range(n)],
        "value": np.concatenate([values[m] for m in names]) if names else np.zeros(0),
    }
    return write_items(run_dir, ITEMS, cols, keys=["image", "metric"], metrics=["value"],
                       meta={"unit": "image", "metrics": names})  # fmt: skip


def check_attack_fits(cfg: EvalConfig, attack_meta: dict[str, str], meta: dict) -> None:
    """The attack run's images must come from the model's dataset; an attack made on
    another checkpoint is allowed (a transfer evaluation) and said so."""
    if attack_meta.get("dataset") not in (None, meta["dataset"]):
        raise ConfigError(
            f"--attacked {cfg.attacked} holds {attack_meta['dataset']} images but the model "
            f"was trained on {meta['dataset']}"
        )
    if attack_meta.get("checkpoint") != meta["checkpoint"]:
        log(f"note: the attack was made on {attack_meta.get('checkpoint')} (transfer evaluation)")


def sample_batches(
    cfg: EvalConfig, attacked: dict[str, torch.Tensor], model, dataset, device: torch.device,
    predictions: torch.Tensor,
) -> tuple[Iterator[dict[str, torch.Tensor]], int]:  # fmt: skip
    """The batches to score ({"x", "y", "index", "pred"}, plus "x_adv" for an attack run's
    images) and how many images they hold at most. `index` is each image's test-split index;
    `pred` is this model's fp32 prediction of the split, read at that index (an attack run's
    images carry their test index; this model may be another than the attacked one)."""
    if attacked:
        tensors = {key: attacked[key] for key in ("x", "x_adv", "y")}
        if "index" in attacked:
            tensors["pred"] = predictions[attacked["index"].long()]
        # the images' test-split indices (attack files from before they were saved: order)
        tensors["index"] = attacked.get("index", torch.arange(int(attacked["y"].numel())))
        return _batches(tensors, cfg.batch_size, device), int(attacked["y"].numel())
    examples = iter_examples(
        model, dataset, cfg.num_examples, cfg.batch_size, device, cfg.correct_only, predictions
    )
    batches = ({"x": x, "y": y, "index": i, "pred": pred} for x, y, i, pred in examples)
    return batches, sample_size(dataset, cfg.num_examples)


def score_batch(
    model, batch: dict[str, torch.Tensor], box, cfg: EvalConfig, *, method: str, opts: dict,
    generator: torch.Generator, k: int, target: torch.Tensor | None,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:  # fmt: skip
    """Every per-image measure of one batch, by group ("sample", "rps/eps<e>",
    "insertion", and with attacked images "attack", "attack_extra", "attack_to_target",
    "adv_insertion"), and the tensors the figure shows.

    The order of the calls is the order the noise generator is drawn from (SmoothGrad,
    RPS), so a seed gives the same numbers on every run."""
    x, y = batch["x"], batch["y"]
    h_clean = heatmap(model, x, y, method, **opts).detach()
    parts = {"x": x, "y": y, "h_clean": h_clean}
    pred = batch["pred"] if "pred" in batch else predict(model, x)  # the decision, read
    groups = {"sample": {"clean_accuracy": (pred == y).float()}}
    for eps in cfg.rps_eps:
        groups[f"rps/eps{eps:g}"] = rps_similarity(
            model, x, y, box, eps=eps, n_draws=cfg.n_draws, noise_generator=generator,
            method=method, k=k, **opts,
        )  # fmt: skip
    if cfg.n_ratios > 0:
        groups["insertion"] = {"curve": insertion_curve(model, x, y, h_clean, cfg.n_ratios)}
    if "x_adv" not in batch:
        return groups, parts
    x_adv = batch["x_adv"]
    h_adv = heatmap(model, x_adv, y, method, **opts).detach()
    groups["attack"] = similarity_report(h_adv, h_clean, k=k)
    pred_adv = predict(model, x_adv)
    groups["attack_extra"] = {
        "label_kept": (pred_adv == pred).float(),
        "adv_accuracy": (pred_adv == y).float(),
    }
    if target is not None:
        frame = target.to(h_adv).expand_as(h_adv)
        groups["attack_to_target"] = similarity_report(h_adv, frame, rank_metrics=False)
    if cfg.n_ratios > 0:
        groups["adv_insertion"] = {"curve": insertion_curve(model, x, y, h_adv, cfg.n_ratios)}
    return groups, parts | {"x_adv": x_adv, "h_adv": h_adv}


def summarise(
    cfg: EvalConfig, per: dict[str, dict[str, list[torch.Tensor]]], attack_meta: dict[str, str]
) -> dict[str, Any]:
    """The RPS, attack and insertion parts of metrics.json, from the per-image measures."""
    out: dict[str, Any] = {}
    if cfg.rps_eps:
        out["rps"] = {"n_draws": cfg.n_draws} | {
            f"eps{eps:g}": mean_metrics(per[f"rps/eps{eps:g}"]) for eps in cfg.rps_eps
        }
    if "attack" in per:
        out["attack"] = {
            "run": str(cfg.attacked),
            "attack": attack_meta.get("attack"),
            "eps": float(attack_meta.get("eps", "nan")),
            **mean_metrics(per["attack_extra"]),
            "similarity_to_clean": mean_metrics(per["attack"]),
        }
        if "attack_to_target" in per:
            out["attack"]["similarity_to_target"] = mean_metrics(per["attack_to_target"])
    for group in ("insertion", "adv_insertion"):
        if group in per:
            curve = torch.cat(per[group]["curve"])  # (N, R)
            out[group] = {"aopc": float(aopc(curve).mean()), "curve": curve.mean(0).tolist()}
    return out


def _batches(tensors: dict[str, torch.Tensor], batch_size: int, device: torch.device):
    for start in range(0, tensors["y"].numel(), batch_size):
        yield {k: v[start : start + batch_size].to(device) for k, v in tensors.items()}
