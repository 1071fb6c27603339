"""The two-stage word filter, the "systematic validation procedure"
(`TLDR:datasets/generate_text.py`).

- Stage 1, CLIP semantic filter (`clip_semantic_filter`, L123-165), for class AND spurious
  words: z_w = E_T("a photo of a {w}.") (lower-cased), a_k = E_T(anchor_k); keep w in
  list c iff argmax_k cos(z_w, a_k) == c. A word listed under two classes survives in at
  most one. With `pairs` (SpuCoAnimals) the comparison runs within each block of lists
  that pair together (birds vs birds, dogs vs dogs; land vs water, indoor vs outdoor),
  which is the official `== c mod 2`.
- Stage 2, classifier-compatibility filter (`target_word_filter`, L167-185), for class
  words that passed stage 1: x_w = ReLU(W*^T z_w + b) (the projector); keep w iff the ERM
  head predicts c from x_w.

Every removed word is reported with its stage and reason. The lists are matched to the
dataset's labels by name first (`labels.py`), and the output file lists them in label
order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from labshared.console import render_table
from labshared.device import Runtime
from labshared.runs import atomic_write_json
from tldr_cli.config import TLDRConfig
from tldr_cli.features import load_splits
from tldr_cli.inputs import check_run
from tldr_cli.labels import align_wordlists
from tldr_cli.pipeline import embed_space, prepare
from tldr_cli.wordlists import WordLists, load_wordlists, save_wordlists


def anchor_filter(word_emb: torch.Tensor, anchor_emb: torch.Tensor, word_class: torch.Tensor):
    """Stage 1 on embeddings.

    Args:
        word_emb: (N, D) text embeddings of the word prompts.
        anchor_emb: (K, D) text embeddings of the anchors of the competing lists.
        word_class: (N,) index in 0..K-1 of each word's own list.

    Returns:
        (keep (N,) bool, nearest (N,) long, cos (N, K)).
    """
    cos = F.normalize(word_emb.float(), dim=-1) @ F.normalize(anchor_emb.float(), dim=-1).T
    nearest = cos.argmax(dim=1)
    return nearest == word_class, nearest, cos


def classifier_filter(
    word_emb: torch.Tensor, projector: Callable, head: Callable, word_class: torch.Tensor
):
    """Stage 2: keep where `head(projector(word_emb))` predicts the word's class.

    Returns:
        (keep (N,) bool, predicted class (N,) long, softmax probabilities (N, C)).
    """
    with torch.no_grad():
        logits = head(projector(word_emb)).float()
    pred = logits.argmax(dim=1)
    return pred == word_class.to(pred.device), pred, logits.softmax(dim=1)


def _blocks(wl: WordLists) -> list[tuple[list[str], list[str]]]:
    """Groups of (class names, spurious names) whose lists compete in stage 1."""
    if wl.pairs is None:
        return [(wl.class_names, wl.spurious_names)]
    blocks: dict[tuple[str, ...], list[str]] = {}
    for c in wl.class_names:
        blocks.setdefault(tuple(wl.allowed_spurious(c)), []).append(c)
    return [(classes, list(values)) for values, classes in blocks.items()]


def run_filters(
    wl: WordLists,
    encode_texts: Callable[[list[str]], torch.Tensor],
    projector: Callable | None,
    head: Callable | None,
) -> tuple[WordLists, list[dict]]:
    """Both stages over all lists. `projector`/`head` None skips stage 2.

    Returns:
        (the filtered lists, one report row per removed word).
    """
    removed: list[dict] = []
    kept: dict[str, dict[str, list[str]]] = {"classes": {}, "spurious": {}}
    prompt = wl.word_template
    for class_names, spurious_names in _blocks(wl):
        for kind, names, lists, anchors in (
            ("classes", class_names, wl.classes, wl.class_anchors),
            ("spurious", spurious_names, wl.spurious, wl.spurious_anchors),
        ):
            anchor_emb = encode_texts([anchors[n] for n in names])
            for k, name in enumerate(names):
                words = lists[name]
                if not words:
                    kept[kind][name] = []
                    continue
                emb = encode_texts([prompt.format(w.lower()) for w in words])
                keep, nearest, cos = anchor_filter(emb, anchor_emb, torch.full((len(words),), k))
                for i in (~keep).nonzero().flatten().tolist():
                    removed.append(
                        {
                            "kind": kind,
                            "list": name,
                            "word": words[i],
                            "stage": 1,
                            "reason": f"nearest anchor is '{names[nearest[i]]}' "
                            f"(cos {cos[i, nearest[i]]:.3f} vs {cos[i, k]:.3f} for its own anchor)",
                        }
                    )
                survivors = [w for w, ok in zip(words, keep.tolist(), strict=True) if ok]
                if kind == "classes" and projector is not None and head is not None and survivors:
                    label = wl.class_names.index(name)
                    ok2, pred, prob = classifier_filter(
                        emb[keep], projector, head, torch.full((len(survivors),), label)
                    )
                    for i in (~ok2).nonzero().flatten().tolist():
                        removed.append(
                            {
                                "kind": kind,
                                "list": name,
                                "word": survivors[i],
                                "stage": 2,
                                "reason": f"ERM head predicts '{wl.class_names[pred[i]]}' "
                                f"(p {prob[i, pred[i]]:.3f}) from the projected word",
                            }
                        )
                    survivors = [w for w, ok in zip(survivors, ok2.tolist(), strict=True) if ok]
                kept[kind][name] = survivors
    filtered = dataclasses.replace(
        wl,
        classes={n: kept["classes"][n] for n in wl.class_names},
        spurious={n: kept["spurious"][n] for n in wl.spurious_names},
        provenance={**wl.provenance, "filtered": {"before": wl.counts(), "removed": len(removed)}},
    )
    return filtered, removed


def check(cfg: TLDRConfig) -> None:
    """Everything `run` reads (words, classifier, gap pairs, weights), validated before the
    run folder exists."""
    check_run(cfg, "filter")


def run(cfg: TLDRConfig, runtime: Runtime, run_dir: Path, *, use_cache: bool):
    """`tldr filter`: fit the projector (needs the classifier and CLIP), run both stages on
    `cfg.words`, write `wordlists.json` (the kept words) and `filter_report.json` (every
    removed word). `cfg` has passed ``check``."""
    wl = load_wordlists(cfg.words)
    splits = load_splits(cfg, ("train",))
    train = splits["train"]
    # by name, before any model is built: position i is label i of the ERM head (stage 2)
    wl = align_wordlists(wl, train.class_names, train.spurious_names, cfg.words, train.dataset)
    ctx = prepare(cfg, runtime, use_cache, feature_splits=("train",), splits=splits)
    device = runtime.device
    filtered, removed = run_filters(
        wl,
        lambda texts: embed_space(ctx.clip.encode_texts(texts, device), cfg),
        lambda emb: ctx.projector(emb.to(device)),
        ctx.classifier.model.fc.to(device),
    )
    run_dir = Path(run_dir)
    out = save_wordlists(run_dir / "wordlists.json", filtered)
    summary = {
        "before": wl.counts(),
        "after": filtered.counts(),
        "removed_stage1": sum(r["stage"] == 1 for r in removed),
        "removed_stage2": sum(r["stage"] == 2 for r in removed),
    }
    atomic_write_json(run_dir / "filter_report.json", {**summary, "removed": removed})
    return out, summary, removed


def summary_table(summary: dict) -> str:
    """One row per list (`classes.<name>`, `spurious.<name>`): words before and after."""
    rows = [
        [f"{kind}.{name}", n, summary["after"][kind][name]]
        for kind in ("classes", "spurious")
        for name, n in summary["before"][kind].items()
    ]
    return render_table(["list", "words before", "after"], rows)
