"""`rtd eval`: score a projection-based ZS-CIR method (Pic2Word, SEARLE, LinCIR), with or
without an RTD-trained text tower, on FashionIQ, CIRR, CIRCO, GeneCIS or the toy world.

SEARLE's trio per benchmark (`SEARLE:src/validate.py`): predictions (composed query
features) -> metrics -> summary. Steps:

1. gallery and reference image features, computed once per (model, weights, benchmark,
   split, transform, precision) and cached (`labshared.cache.cached_tensors`);
2. pseudo tokens `phi(encode_image(ref))` from unnormalised image features (brief §2);
3. the prompt, e.g. "a photo of $ that {mod}", through the (trained) text tower with the
   pseudo token at every `$`; L2-normalised;
4. chunked top-k ranking against the L2-normalised gallery (`retrieval.py`), per-query
   candidate scoring for CIRR subsets and GeneCIS;
5. metrics (`scoring.py`, `metrics.py`), benchmark summary, and server files for CIRR/CIRCO
   test.

Deviations from the official code, each listed in the README:
- CIRCO val works (RTD/LinCIR `validate.py --dataset circo` crashes on an undefined name).
- GeneCIS object tasks use each query's `condition` (LinCIR's `eval_genecis` branch builds
  those prompts from the batch's last element, the target rank).
- Pic2Word queries put the pseudo token at every `*` of each row, not at sample 0's first
  `*` position for the whole batch.
- Preprocessing is open_clip's val transform (SEARLE's `targetpad` is not reproduced; it
  crashes in the RTD/LinCIR validators, whose numbers come from plain CLIP preprocessing).
- CIRCO val also reports mAP@10 per semantic aspect (`CIRCO:src/evaluation.py`, which only
  its server runs; RTD/LinCIR do not report it); aspects no query carries are left out.
- Without `--prompt`, Pic2Word is scored with its own "a photo of * , {mod}" (as `rtd train`
  trains it); RTD's paper protocol for every base is `--prompt rtd`.

The toy world (ours, no paper counterpart) also reports its metrics per changed attribute
(queries that change the digit / the colour / the background), from `CIRQuery.groups`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labshared.console import log, track
from labshared.data.composed_retrieval import DEFAULT_SPLIT, CIRBenchmark
from labshared.device import resolve_device
from labshared.items import write_items
from labshared.runs import write_metrics
from labshared.stats import BootstrapSpec, intervals, intervals_dict
from rtd_cli import metrics as M
from rtd_cli import submission
from rtd_cli.aspects import circo_semantic_aspects
from rtd_cli.compare import ITEMS
from rtd_cli.config import EvalConfig
from rtd_cli.datacheck import load_benchmarks
from rtd_cli.features import benchmarks_features
from rtd_cli.gallery_loader import resolve_decode
from rtd_cli.model import (
    BASES,
    build_clip_bundle,
    check_clip,
    clip_dims,
    load_projection,
    phi_provenance_mismatch,
    prompt_for,
    pseudo_token_id,
    text_tower_from_clip,
)
from rtd_cli.scoring import PartResult, evaluate_part
from rtd_cli.tower_file import load_text_tower


# --------------------------------------------------------------------------- predictions
def clean_fiq_caption(text: str) -> str:
    """SEARLE/LinCIR strip each FashionIQ caption of `.`, `?`, `,` and spaces at both ends."""
    return text.strip(".?, ")


def modification_texts(bench, orders: str) -> list[list[str]]:
    """Per query, the modification text(s) to compose. FashionIQ: `both` orders of the two
    captions, each stripped of `.?, ` (SEARLE/LinCIR `validate.py`), or Pic2Word's single
    "{c2} and {c1}" with the raw captions (`composed_image_retrieval:src/data.py`)."""
    out = []
    for q in bench.queries:
        if bench.dataset == "fashioniq" and orders == "both":
            c1, c2 = (clean_fiq_caption(c) for c in q.captions)
            out.append([f"{c1} and {c2}", f"{c2} and {c1}"])
        elif bench.dataset == "fashioniq":
            out.append([f"{q.captions[1]} and {q.captions[0]}"])
        else:
            out.append([q.captions[0]])
    return out


@torch.no_grad()
def compose_queries(
    ref_feats: torch.Tensor,
    texts: list[list[str]],
    template: str,
    symbol: str,
    tower,
    phi,
    tokenizer,
    runtime,
    batch_size: int,
) -> torch.Tensor:
    """(Q, D) L2-normalised composed-query features.

    With several texts per query (FashionIQ's two orders), the normalised features are
    averaged and renormalised (`SEARLE:src/validate.py` L45-65).
    """
    token_id = pseudo_token_id(tokenizer, symbol)
    n_var = len(texts[0])
    out = torch.empty(len(texts), ref_feats.shape[1])
    for s in track(range(0, len(texts), batch_size), "composing queries"):
        refs = ref_feats[s : s + batch_size].to(runtime.device)
        with runtime.autocast():
            pseudo = phi(refs)  # (b, W)
        acc = 0
        for v in range(n_var):
            prompts = [template.format(mod=t[v]) for t in texts[s : s + batch_size]]
            ids = tokenizer(prompts).to(runtime.device)
            with runtime.autocast():
                feats = tower(ids, pseudo, token_id)
            acc = acc + F.normalize(feats.float(), dim=-1)
        out[s : s + len(refs)] = F.normalize(acc, dim=-1).cpu()
    return out


# --------------------------------------------------------------------------- the recipe
def check(cfg: EvalConfig, device: str = "auto") -> list[CIRBenchmark]:
    """`start_run`'s validation of `rtd eval`: `--decode gpu` has a CUDA device, the CLIP
    weights are at hand, `--phi` loads and fits them, and the benchmark reads (a wrong
    `--split`, `--data-root` or `--parts` fails here, before the run folder exists).
    Returns the benchmark's parts, to score."""
    resolve_decode(cfg.decode, resolve_device(device))
    check_clip(cfg.backbone, cfg.pretrained, cfg.phi, cfg.base, cfg.quick_gelu)
    return load_benchmarks(cfg)


@dataclass
class Prepared:
    """What stays fixed across text towers: benchmarks, frozen CLIP, phi, image features,
    prompts (so `rtd train` validates a changing tower without recomputing any of it)."""

    cfg: EvalConfig
    split: str
    benches: list[CIRBenchmark]
    clip_model: Any
    tokenizer: Any
    phi: Any
    template: str
    symbol: str
    orders: str
    features: list[tuple[torch.Tensor, dict[str, int]]]
    texts: list[list[list[str]]]
    aspects: list[list[tuple[str, ...]] | None]


def prepare(
    cfg: EvalConfig,
    runtime,
    benches: list[CIRBenchmark] | None = None,
    use_cache: bool = True,
) -> Prepared:
    """Load models and (cached) image features for `cfg`; `benches` as `check` read
    them (None: read them here)."""
    split = cfg.split or DEFAULT_SPLIT.get(cfg.dataset, "val")
    benches = benches if benches is not None else load_benchmarks(cfg)
    clip_model, preprocess, tokenizer, clip_info = build_clip_bundle(
        cfg.backbone, cfg.pretrained, runtime.device, quick_gelu=cfg.quick_gelu
    )
    embed_dim, token_dim = clip_dims(clip_model)
    phi = load_projection(cfg.phi, cfg.base, in_dim=embed_dim, token_dim=token_dim).to(
        runtime.device
    )
    if mismatch := phi_provenance_mismatch(cfg.phi, cfg.backbone, cfg.pretrained):
        log(f"[yellow]warning:[/yellow] {mismatch}")
    template, symbol = prompt_for(cfg.base, cfg.dataset, cfg.prompt)
    orders = cfg.fiq_orders or ("both" if cfg.prompt == "rtd" else BASES[cfg.base].fiq_orders)
    log(f"prompt: {template!r} (pseudo token {symbol!r}); FashionIQ caption orders: {orders}")
    features = benchmarks_features(
        benches, clip_model, preprocess, cfg, runtime, clip_info, use_cache
    )
    texts = [modification_texts(b, orders) for b in benches]
    aspects = [
        circo_semantic_aspects(b) if b.dataset == "circo" and split == "val" else None
        for b in benches
    ]
    return Prepared(
        cfg, split, benches, clip_model, tokenizer, phi, template, symbol, orders, features,
        texts, aspects,
    )  # fmt: skip


def score(prep: Prepared, tower, runtime) -> list[PartResult]:
    """Compose every query with `tower` and rank: one `PartResult` per benchmark part."""
    results = []
    for bench, (feats, index), texts, aspects in zip(
        prep.benches, prep.features, prep.texts, prep.aspects, strict=True
    ):
        ref_feats = feats[
            torch.tensor([index[q.reference] for q in bench.queries], dtype=torch.long)
        ]
        queries = compose_queries(
            ref_feats,
            texts,
            prep.template,
            prep.symbol,
            tower,
            prep.phi,
            prep.tokenizer,
            runtime,
            prep.cfg.text_batch_size,
        )
        results.append(evaluate_part(bench, feats, index, queries, runtime, aspects=aspects))
    return results


def _parts(prep: Prepared, results: list[PartResult]) -> dict[str, dict[str, float]]:
    return {
        (b.part or b.name): r.metrics
        for b, r in zip(prep.benches, results, strict=True)
        if r.metrics
    }


def run(
    cfg: EvalConfig,
    run_dir: Path,
    runtime,
    benches: list[CIRBenchmark] | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Evaluate and write metrics.json (and submissions for test splits); returns metrics."""
    prep = prepare(cfg, runtime, benches, use_cache)
    if cfg.text_encoder is not None:
        tower = load_text_tower(cfg.text_encoder, prep.clip_model, backbone=cfg.backbone)
        log(f"text tower: {cfg.text_encoder}")
    else:
        tower = text_tower_from_clip(prep.clip_model).to(runtime.device).eval()
    results = score(prep, tower, runtime)
    parts = _parts(prep, results)
    out = {
        "dataset": cfg.dataset,
        "split": prep.split,
        "base": cfg.base,
        "prompt": prep.template,
        "fiq_orders": prep.orders if cfg.dataset == "fashioniq" else None,
        "text_encoder": str(cfg.text_encoder) if cfg.text_encoder else None,
        "parts": parts,
        "summary": M.summarize(cfg.dataset, parts),
        "n_queries": {b.name: len(b.queries) for b in prep.benches},
        # the queries each part's metrics average over (keyed as `parts`)
        "part_queries": {(b.part or b.name): len(b.queries) for b in prep.benches},
        "n_gallery": {b.name: len(b.gallery) for b in prep.benches},
        "submission_files": write_submissions(run_dir, cfg.base, prep.benches, results),
    }
    if cfg.dataset == "toy":
        out["toy_seed"] = cfg.toy_seed
    out.update(semantic_aspect_metrics(results))
    out.update(attribute_metrics(results))
    spec = BootstrapSpec(seed=runtime.seed)
    if any(r.per_query for r in results):
        out["intervals"] = metric_intervals(prep, results, spec)
        out["bootstrap"] = spec.record("query")
    out["items"] = str(write_query_items(run_dir, prep, results).relative_to(run_dir))
    write_metrics(run_dir, out)
    return out


def write_submissions(
    run_dir: Path, base: str, benches: list[CIRBenchmark], results: list[PartResult]
) -> list[str]:
    """The server files of CIRR / CIRCO test splits; the paths written."""
    files: list[str] = []
    for bench, result in zip(benches, results, strict=True):
        if bench.dataset == "cirr" and result.ranked:
            recall, subset = submission.cirr_submissions(result.ranked, result.subset_ranked)
            files += [str(p) for p in submission.write_cirr(run_dir, base, recall, subset)]
        elif bench.dataset == "circo" and result.ranked:
            sub = submission.circo_submission(result.ranked)
            files += [str(p) for p in submission.write_circo(run_dir, base, sub)]
    return files


def semantic_aspect_metrics(results: list[PartResult]) -> dict[str, Any]:
    """CIRCO val: the official evaluation's per-aspect mAP@10 and query counts ({} else)."""
    aspects = {k: v for r in results for k, v in r.aspects.items()}
    if not aspects:
        return {}
    counts = {k: v for r in results for k, v in r.aspect_queries.items()}
    return {"semantic_aspects": aspects, "semantic_aspect_queries": counts}


def attribute_metrics(results: list[PartResult]) -> dict[str, Any]:
    """Toy: the metrics of the queries that change each attribute, and their counts."""
    by_attribute = {k: v for r in results for k, v in r.groups.items()}
    if not by_attribute:
        return {}
    counts = {k: v for r in results for k, v in r.group_queries.items()}
    return {"by_attribute": by_attribute, "attribute_queries": counts}


def _stack(per_query: dict[str, torch.Tensor], keys: list[str]) -> np.ndarray:
    return np.stack([per_query[k].numpy() for k in keys], axis=1)  # (Q, M)


def metric_intervals(
    prep: Prepared, results: list[PartResult], spec: BootstrapSpec
) -> dict[str, Any]:
    """95 % percentile-bootstrap intervals over queries of every metric: per part, of the
    summary (the mean over parts, each part resampled within itself) and, on the toy,
    of each changed attribute's queries. `{"parts": {part: {metric: [low, high]}},
    "summary": {...}, "by_attribute": {...}}`."""
    scored = [(b.part or b.name, b, r) for b, r in zip(prep.benches, results, strict=True)
              if r.per_query]  # fmt: skip
    out: dict[str, Any] = {"parts": {}}
    for name, _, r in scored:
        keys = list(r.per_query)
        out["parts"][name] = intervals_dict(keys, intervals(_stack(r.per_query, keys), spec=spec))
    common = [k for k in scored[0][2].per_query if all(k in r.per_query for *_, r in scored)]
    values = np.concatenate([_stack(r.per_query, common) for *_, r in scored])
    parts = np.concatenate([np.full(r.n_queries, i) for i, (*_, r) in enumerate(scored)])
    how = "group_mean" if len(scored) > 1 else "mean"
    out["summary"] = intervals_dict(
        common, intervals(values, parts if len(scored) > 1 else None, how, spec=spec)
    )
    groups = [q.groups for _, b, _ in scored for q in b.queries]
    by_attribute = {k: v for *_, r in scored for k, v in r.groups.items()}
    for attr, metrics in by_attribute.items():
        rows = np.array([attr in g for g in groups])
        keys = list(metrics)
        cols = np.stack([values[rows, common.index(k)] for k in keys], axis=1)
        out.setdefault("by_attribute", {})[attr] = intervals_dict(keys, intervals(cols, spec=spec))
    return out


def write_query_items(run_dir: Path, prep: Prepared, results: list[PartResult]) -> Path:
    """`items/queries.parquet`: one row per query of every part, val and test alike:
    part, query_id, reference, targets, first_rank (1-based rank of its first ground truth
    in the top 50; 0 when none is there; null on a test split), top_ids (the 50 gallery
    names ranked first), groups (the toy's changed attributes) and, where ground truth
    exists, one column per metric holding the query's contribution (0 / 100 for a recall,
    AP@K x 100 for CIRCO's mAP@K)."""
    metric_keys = list(dict.fromkeys(k for r in results for k in r.per_query))
    cols: dict[str, list] = {
        c: []
        for c in (
            "part",
            "query_id",
            "reference",
            "targets",
            "first_rank",
            "top_ids",
            "groups",
            *metric_keys,
        )
    }
    for bench, r in zip(prep.benches, results, strict=True):
        cols["part"] += [bench.part or bench.name] * r.n_queries
        cols["query_id"] += [q.query_id for q in bench.queries]
        cols["reference"] += [q.reference for q in bench.queries]
        cols["targets"] += [list(q.targets) for q in bench.queries]
        cols["groups"] += [list(q.groups) for q in bench.queries]
        cols["first_rank"] += r.first_rank
        cols["top_ids"] += r.top_names
        for k in metric_keys:
            v = r.per_query.get(k)
            cols[k] += v.tolist() if v is not None else [None] * r.n_queries
    meta = {"unit": "query", "top_k": 50, "dataset": prep.cfg.dataset, "split": prep.split}
    return write_items(run_dir, ITEMS, cols, keys=["part", "query_id"], metrics=metric_keys,
                       meta=meta)  # fmt: skip


def make_validator(
    cfg: EvalConfig,
    runtime,
    benches: list[CIRBenchmark] | None = None,
    use_cache: bool = True,
):
    """`(tower, step) -> {metric: value}` for `rtd train`'s periodic validation on `cfg`:
    the benchmark summary (e.g. `R@1`) plus `<part>/<metric>` for multi-part benchmarks."""
    prep = prepare(cfg, runtime, benches, use_cache)

    def validate(tower, step: int) -> dict[str, float]:
        parts = _parts(prep, score(prep, tower, runtime))
        flat = dict(M.summarize(cfg.dataset, parts))
        if len(parts) > 1:
            flat.update({f"{p}/{k}": v for p, m in parts.items() for k, v in m.items()})
        return flat

    return validate
