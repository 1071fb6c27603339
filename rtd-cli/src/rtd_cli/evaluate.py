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
5. metrics (`metrics.py`), benchmark summary, and server files for CIRR/CIRCO test.

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

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labshared.console import log, track
from labshared.errors import ConfigError
from rtd_cli import metrics as M
from rtd_cli.aspects import circo_semantic_aspects
from rtd_cli.config import TOY_EVAL_DISTRACTORS, TOY_EVAL_QUERIES
from rtd_cli.features import benchmark_features
from rtd_cli.model import (
    BASES,
    PROMPT_STYLES,
    build_clip_bundle,
    clip_dims,
    get_base,
    load_projection,
    load_text_tower,
    phi_provenance_mismatch,
    prompt_for,
    pseudo_token_id,
    text_tower_from_clip,
)
from rtd_cli.projection import default_prompt_style as base_default_prompt
from rtd_cli.retrieval import chunked_topk, gather_scores

FIQ_ORDERS = ("both", "single")
#: toy runs: per query, the rank of its first ground truth (`first_hit`, 0 = not in top 50)
PER_QUERY_FILE = "per_query.json"


@dataclass(frozen=True)
class EvalConfig:
    """Everything `rtd eval` needs (the resolved config written to config.json).

    Attributes:
        dataset: fashioniq | cirr | circo | genecis | toy.
        split: val | test (None: the dataset's default: test for GeneCIS, val otherwise).
        base: pic2word | searle | lincir (projection type, checkpoint format, prompts).
        phi: the projection checkpoint (official format).
        backbone, pretrained: open_clip architecture and weights (see `model.build_clip`).
        quick_gelu: `--quick-gelu on|off` for a local checkpoint (None: from the weights).
        text_encoder: a text tower saved by `rtd train`; None keeps the CLIP's own.
        data_root: the benchmark folder in its official layout, or `hf`.
        prompt: `rtd` ("a photo of $ that {mod}" for every base) or `base` (each base
            repo's own prompt).
        fiq_orders: FashionIQ caption joining: `both` orders averaged (SEARLE/LinCIR/RTD)
            or `single` (Pic2Word's "{c2} and {c1}"); None follows the prompt style.
        parts: FashionIQ categories or GeneCIS tasks (None: all).
        batch_size: images per encoding batch; text_batch_size: prompts per batch.
        workers: DataLoader workers for image decoding (None: 8 on CUDA, 0 on CPU).
        toy_queries: number of toy queries (their targets open the gallery).
        toy_distractors: random toy images added to the gallery (None: as many as queries).
        toy_seed: the toy world's data seed: it draws the queries, their targets and the
            distractors (the same seed scores the same benchmark in every run).
    """

    dataset: str
    base: str
    phi: Path
    backbone: str
    split: str | None = None
    pretrained: str | None = None
    quick_gelu: bool | None = None
    text_encoder: Path | None = None
    data_root: Path | None = None
    prompt: str = "rtd"
    fiq_orders: str | None = None
    parts: tuple[str, ...] | None = None
    batch_size: int = 128
    text_batch_size: int = 256
    workers: int | None = None
    toy_queries: int = TOY_EVAL_QUERIES
    toy_distractors: int | None = TOY_EVAL_DISTRACTORS
    toy_seed: int = 0
    cache: bool = True

    def validate(self) -> None:
        get_base(self.base)
        if self.prompt not in PROMPT_STYLES:
            raise ConfigError(
                f"--prompt {self.prompt!r}: expected one of {', '.join(PROMPT_STYLES)}"
            )
        if self.fiq_orders not in (None, *FIQ_ORDERS):
            raise ConfigError(
                f"--fiq-orders {self.fiq_orders!r}: expected one of {', '.join(FIQ_ORDERS)}"
            )
        # A wrong or corrupt --phi is one line here, before any model or image loads.
        load_projection(self.phi, self.base)
        if self.text_encoder is not None and not Path(self.text_encoder).exists():
            raise ConfigError(f"--text-encoder {self.text_encoder}: no such file or folder")
        if self.batch_size < 1 or self.text_batch_size < 1 or self.toy_queries < 1:
            raise ConfigError("--batch-size and --toy-queries must be positive")
        if self.toy_distractors is not None and self.toy_distractors < 0:
            raise ConfigError(f"--toy-distractors must be >= 0, got {self.toy_distractors}")
        if self.toy_seed < 0:
            raise ConfigError(f"--toy-seed must be >= 0, got {self.toy_seed}")


# --------------------------------------------------------------------------- predictions
TEXT_ENCODER_FORMAT = (
    "a text tower written by `rtd train` (text_tower.safetensors, or the run folder holding it)"
)


def text_encoder_file(path: str | Path) -> Path:
    """The safetensors file of `--text-encoder` (a file, or a run folder holding one)."""
    path = Path(path)
    if path.is_dir():
        for name in ("text_tower.safetensors", "model.safetensors"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(
            f"--text-encoder {path}: the folder holds no text_tower.safetensors or "
            f"model.safetensors; expected {TEXT_ENCODER_FORMAT}"
        )
    return path


def read_text_encoder_config(path: str | Path) -> dict[str, Any]:
    """The config `rtd train` saved with a text tower (`backbone`, `prompt_style`, ...);
    `{}` for a plain safetensors state dict without it.

    The whole file is read, so that a truncated, corrupt or non-safetensors file is one
    `ConfigError` naming it and the expected format before any model loads.
    """
    import json

    from labshared.runs import read_safetensors

    file = text_encoder_file(path)
    _, metadata = read_safetensors(file, flag="--text-encoder", expected=TEXT_ENCODER_FORMAT)
    if "rtd" not in metadata:
        return {}
    try:
        return dict(json.loads(metadata["rtd"])["config"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"--text-encoder {file}: its 'rtd' metadata holds no readable config; expected "
            f"{TEXT_ENCODER_FORMAT}"
        ) from None


def default_prompt_style(base: str, tower_config: Mapping[str, Any] | None = None) -> str:
    """The prompt style `rtd eval` uses when `--prompt` is not given: the one the
    `--text-encoder` was trained with (`tower_config`, from `read_text_encoder_config`),
    else the base's default, the one `rtd train` uses too (`projection.default_prompt_style`:
    `base` for Pic2Word's "a photo of * , {mod}", `rtd` for SEARLE/LinCIR)."""
    fallback = base_default_prompt(base)
    style = (tower_config or {}).get("prompt_style", fallback)
    return style if style in PROMPT_STYLES else fallback


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


# --------------------------------------------------------------------------- per benchmark
@dataclass
class PartResult:
    metrics: dict[str, float]
    ranked: dict[str, list[str]]  # query id -> ranked names (test splits only)
    subset_ranked: dict[str, list[str]]
    n_queries: int
    # CIRCO val: mAP@10 per semantic aspect and how many queries carry each
    aspects: dict[str, float] = field(default_factory=dict)
    aspect_queries: dict[str, int] = field(default_factory=dict)
    # toy: the metrics of the queries of each group (changed attribute), and their counts
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    group_queries: dict[str, int] = field(default_factory=dict)
    # toy: per query, the 1-based rank of its first ground truth (0: not in the top k)
    first_hit: list[int] = field(default_factory=list)


def evaluate_part(
    bench,
    feats: torch.Tensor,
    index: dict[str, int],
    queries: torch.Tensor,
    runtime,
    top_k: int = 50,
    aspects: list[tuple[str, ...]] | None = None,
) -> PartResult:
    """Rank and score one benchmark part from composed-query features (Q, D); `aspects`
    (CIRCO val, per query) adds the semantic-aspect mAP@10."""
    gal_all = F.normalize(feats, dim=-1)
    device = runtime.device
    is_test = not any(q.targets for q in bench.queries)
    ranked: dict[str, list[str]] = {}
    subset_ranked: dict[str, list[str]] = {}
    if bench.dataset == "genecis":
        cands = M.pad_targets([[index[n] for n in q.gallery] for q in bench.queries])
        scores = gather_scores(queries, gal_all, cands)
        ranks = M.rank_in_candidates(
            scores, torch.zeros(len(queries), dtype=torch.long), cands >= 0
        )
        return PartResult(M.genecis_metrics(ranks), {}, {}, len(queries))
    gal_idx = torch.tensor([index[n] for n in bench.gallery], dtype=torch.long)
    gallery = gal_all[gal_idx].to(device)  # 123k x 768 fp32 is 0.38 GB: fine on any GPU
    pos = {n: i for i, n in enumerate(bench.gallery)}
    exclude = None
    if bench.dataset == "cirr":  # the reference never counts as a result (cirr_compute_val_metrics)
        exclude = torch.tensor([pos.get(q.reference, -1) for q in bench.queries], dtype=torch.long)
    t0 = time.perf_counter()
    _, top = chunked_topk(
        queries.to(device),
        gallery,
        top_k,
        exclude=None if exclude is None else exclude.to(device),
        device=device,
    )
    top = top.cpu()
    log(
        f"[dim]{bench.name}: ranked {len(queries)} queries against {len(gallery)} images in {time.perf_counter() - t0:.2f} s[/dim]"
    )
    if is_test:
        ranked = {
            q.query_id: [bench.gallery[j] for j in row]
            for q, row in zip(bench.queries, top.tolist(), strict=True)
        }
    subset_rank = None
    if bench.dataset == "cirr" and all(q.subset for q in bench.queries):
        members = [[n for n in q.subset if n != q.reference] for q in bench.queries]
        cands = M.pad_targets([[index[n] for n in m] for m in members])
        scores = gather_scores(queries, gal_all, cands)
        if is_test:
            order = scores.argsort(dim=1, descending=True, stable=True).tolist()
            subset_ranked = {
                q.query_id: [m[j] for j in o if j < len(m)]
                for q, m, o in zip(bench.queries, members, order, strict=True)
            }
        else:
            col = torch.tensor(
                [
                    m.index(q.targets[0]) if q.targets[0] in m else 0
                    for q, m in zip(bench.queries, members, strict=True)
                ]
            )
            subset_rank = M.rank_in_candidates(scores, col, cands >= 0)
            missing = torch.tensor(
                [q.targets[0] not in m for q, m in zip(bench.queries, members, strict=True)]
            )
            subset_rank[missing] = cands.shape[1]  # a target outside its subset is never found
    if is_test:
        return PartResult({}, ranked, subset_ranked, len(queries))
    gts = M.pad_targets([[pos[t] for t in q.targets if t in pos] for q in bench.queries])
    if bench.dataset == "fashioniq":
        metrics = M.fashioniq_metrics(top, gts[:, 0])
    elif bench.dataset == "cirr":
        metrics = M.cirr_metrics(top, gts[:, 0], subset_rank)
    elif bench.dataset == "circo":
        metrics = M.circo_metrics(top, gts)
        if aspects is not None:
            hits = M.hits_matrix(top, gts)
            by_aspect, n_aspect = M.semantic_map_at_10(hits, (gts != M.PAD).sum(dim=1), aspects)
            return PartResult(metrics, ranked, subset_ranked, len(queries), by_aspect, n_aspect)
    else:
        metrics = M.toy_metrics(top, gts)
        if any(q.groups for q in bench.queries):
            from labshared.toy import ATTRIBUTES

            by_group, n_group = M.metrics_by_group(
                top, gts, [q.groups for q in bench.queries], M.toy_metrics, order=ATTRIBUTES
            )
            first = M.first_hit_rank(M.hits_matrix(top, gts)).tolist()
            return PartResult(
                metrics, ranked, subset_ranked, len(queries), groups=by_group,
                group_queries=n_group, first_hit=first,
            )  # fmt: skip
    return PartResult(metrics, ranked, subset_ranked, len(queries))


# --------------------------------------------------------------------------- the recipe
@dataclass
class Prepared:
    """What stays fixed across text towers: benchmarks, frozen CLIP, phi, image features,
    prompts (so `rtd train` validates a changing tower without recomputing any of it)."""

    cfg: EvalConfig
    split: str
    benches: list
    clip_model: Any
    tokenizer: Any
    phi: Any
    template: str
    symbol: str
    orders: str
    features: list[tuple[torch.Tensor, dict[str, int]]]
    texts: list[list[list[str]]]
    aspects: list[list[tuple[str, ...]] | None]


def prepare(cfg: EvalConfig, runtime) -> Prepared:
    """Load data, models and (cached) image features for `cfg`."""
    from labshared.data.composed_retrieval import DEFAULT_SPLIT, build_benchmarks

    cfg.validate()
    split = cfg.split or DEFAULT_SPLIT.get(cfg.dataset, "val")
    toy_kwargs = (
        {"n_queries": cfg.toy_queries, "n_distractors": cfg.toy_distractors, "seed": cfg.toy_seed}
        if cfg.dataset == "toy"
        else {}
    )
    benches = build_benchmarks(cfg.dataset, cfg.data_root, split, cfg.parts, **toy_kwargs)
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
    features = [
        benchmark_features(b, clip_model, preprocess, cfg, runtime, clip_info) for b in benches
    ]
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


def run_eval(cfg: EvalConfig, run_dir: Path, runtime) -> dict[str, Any]:
    """Evaluate and write metrics.json (and submissions for test splits); returns metrics."""
    from labshared.runs import write_metrics
    from rtd_cli import submission

    prep = prepare(cfg, runtime)
    if cfg.text_encoder is not None:
        tower = load_text_tower(cfg.text_encoder, prep.clip_model, backbone=cfg.backbone)
        log(f"text tower: {cfg.text_encoder}")
    else:
        tower = text_tower_from_clip(prep.clip_model).to(runtime.device).eval()
    results = score(prep, tower, runtime)
    files: list[str] = []
    for bench, result in zip(prep.benches, results, strict=True):
        if bench.dataset == "cirr" and result.ranked:
            recall, subset = submission.cirr_submissions(result.ranked, result.subset_ranked)
            files += [str(p) for p in submission.write_cirr(run_dir, cfg.base, recall, subset)]
        elif bench.dataset == "circo" and result.ranked:
            sub = submission.circo_submission(result.ranked)
            files += [str(p) for p in submission.write_circo(run_dir, cfg.base, sub)]
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
        "n_gallery": {b.name: len(b.gallery) for b in prep.benches},
        "submission_files": files,
    }
    if cfg.dataset == "toy":
        out["toy_seed"] = cfg.toy_seed
    aspects = {k: v for r in results for k, v in r.aspects.items()}
    if aspects:  # CIRCO val: the official evaluation's per-aspect mAP@10
        out["semantic_aspects"] = aspects
        out["semantic_aspect_queries"] = {
            k: v for r in results for k, v in r.aspect_queries.items()
        }
    by_attribute = {k: v for r in results for k, v in r.groups.items()}
    if by_attribute:  # toy: the metrics of the queries that change each attribute
        out["by_attribute"] = by_attribute
        out["attribute_queries"] = {k: v for r in results for k, v in r.group_queries.items()}
        # per query, for paired comparisons of two runs on the same benchmark
        per_query = [
            {"query_id": q.query_id, "groups": list(q.groups), "first_hit": rank}
            for bench, r in zip(prep.benches, results, strict=True)
            for q, rank in zip(bench.queries, r.first_hit, strict=True)
        ]
        write_metrics(run_dir, {"top_k": 50, "queries": per_query}, name=PER_QUERY_FILE)
    write_metrics(run_dir, out)
    return out


def make_validator(
    *,
    dataset: str,
    root,
    backbone: str,
    pretrained,
    base: str,
    phi,
    prompt: str,
    runtime,
    use_cache: bool = True,
    toy_queries: int = TOY_EVAL_QUERIES,
    toy_distractors: int | None = TOY_EVAL_DISTRACTORS,
    toy_seed: int = 0,
    quick_gelu: bool | None = None,
):
    """`(tower, step) -> {metric: value}` for `rtd train`'s periodic validation: the
    benchmark summary (e.g. `R@1`) plus `<part>/<metric>` for multi-part benchmarks."""
    cfg = EvalConfig(
        dataset=dataset, base=base, phi=Path(phi), backbone=backbone, pretrained=pretrained,
        data_root=Path(root) if root else None, prompt=prompt, cache=use_cache,
        toy_queries=toy_queries, toy_distractors=toy_distractors, toy_seed=toy_seed,
        quick_gelu=quick_gelu,
    )  # fmt: skip
    prep = prepare(cfg, runtime)

    def validate(tower, step: int) -> dict[str, float]:
        parts = _parts(prep, score(prep, tower, runtime))
        flat = dict(M.summarize(dataset, parts))
        if len(parts) > 1:
            flat.update({f"{p}/{k}": v for p, m in parts.items() for k, v in m.items()})
        return flat

    return validate


def format_table(result: dict[str, Any]) -> str:
    """A plain-text metrics table (rows: parts and the summary)."""
    rows = [(name, m) for name, m in result["parts"].items()]
    if result["summary"] and len(rows) > 1:
        rows.append(("average", result["summary"]))
    if not rows:
        files = "\n".join(f"  {f}" for f in result["submission_files"])
        return f"{result['dataset']} {result['split']}: no local metrics (test split); server files:\n{files}"
    cols = list(dict.fromkeys(k for _, m in rows for k in m))
    width = max(len(n) for n, _ in rows) + 2
    if result.get("by_attribute"):
        width = max(width, len("by changed attribute") + 2)
    lines = [
        f"{result['dataset']} {result['split']} | base {result['base']} | prompt {result['prompt']!r}"
    ]
    lines.append("".ljust(width) + "".join(c.rjust(10) for c in cols))
    for name, m in rows:
        lines.append(
            name.ljust(width) + "".join((f"{m[c]:.2f}" if c in m else "-").rjust(10) for c in cols)
        )
    if result.get("by_attribute"):
        counts = result.get("attribute_queries", {})
        lines.append("")
        lines.append("by changed attribute".ljust(width) + "".join(c.rjust(10) for c in cols)
                     + "queries".rjust(10))  # fmt: skip
        for attribute, m in result["by_attribute"].items():
            lines.append(
                attribute.ljust(width)
                + "".join((f"{m[c]:.2f}" if c in m else "-").rjust(10) for c in cols)
                + str(counts.get(attribute, "-")).rjust(10)
            )
    if result.get("semantic_aspects"):
        counts = result.get("semantic_aspect_queries", {})
        aspect_width = max(len(a) for a in result["semantic_aspects"]) + 2
        lines.append("")
        lines.append(
            "semantic aspect".ljust(aspect_width) + "mAP@10".rjust(10) + "queries".rjust(10)
        )
        for aspect, value in result["semantic_aspects"].items():
            lines.append(
                aspect.ljust(aspect_width) + f"{value:.2f}".rjust(10)
                + str(counts.get(aspect, "-")).rjust(10)
            )  # fmt: skip
    return "\n".join(lines)
