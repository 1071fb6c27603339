"""Token ids of a triplet set, computed once per set instead of in every training step.

The official loader (`jaeseokbyun/RTD:loader.py::CaptionDataset_RTD`) tokenises each
triplet when it is drawn; our step did the same with open_clip's Python BPE, 4B texts a
step (2,048 at the paper's batch 512), about as long as a GPU step itself. Here the three
texts of every triplet (the cleaned target T_t, the cleaned reference T_r and the composed
query "a photo of $ that {T_c}") are tokenised once, in batch, at the start of a run
(`triplet_tokens`), optionally across processes, and kept as ragged int32 rows (the
tokenizer's rows without their trailing zero padding: captions are ~10-30 of 77 tokens).
The step gathers its rows back into the tokenizer's (2B, context) layout, so what it feeds
the towers is exactly what the tokenizer would have returned (`tests/rtd/test_tokens.py`).

The ids are cached (`labshared.cache`), keyed by the triplets' content, the tokenizer's
identity (class, vocabulary digest, context length, open_clip version), the template and
the symbol, so a second run on the same set reads them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import open_clip
import torch

from labshared.cache import cached_tensors
from labshared.console import log
from labshared.data.text_triplets import TextTriplet

#: Below this many texts a worker pool costs about what it saves. Measured on 2 shared
#: cores (toy captions, open_clip's BPE): 20k texts 1.28 s in one process, 1.37 s with 2
#: workers; 80k texts 6.0 s vs 4.1 s.
POOL_MIN_TEXTS = 60_000

#: The roles of a triplet set's token ids, in the order the step uses them.
ROLES = ("targets", "refs", "queries")


def clean_caption(caption: str, symbol: str) -> str:
    """Official `clean_caption` (lower case, symbol removed); truncation is the tokenizer's."""
    return caption.lower().replace(symbol, "").strip()


def step_texts(triplets: Sequence[TextTriplet], template: str, symbol: str) -> dict[str, list[str]]:
    """The texts the step encodes for each triplet: the cleaned target and reference
    (anchors) and the composed query (`template` with the modification in `{mod}`).

    Deviation: the symbol is removed from the modification text too, so that only the
    template's slot takes the pseudo token (the official code leaves a `$` in T_c alone).
    """
    mods = [t.conditioning.replace(symbol, " ").strip() for t in triplets]
    return {
        "targets": [clean_caption(t.target, symbol) for t in triplets],
        "refs": [clean_caption(t.reference, symbol) for t in triplets],
        "queries": [template.format(mod=m) for m in mods],
    }


@dataclass(frozen=True)
class RaggedIds:
    """Token-id rows of different lengths, stored back to back.

    Attributes:
        flat: (T,) int32, every row's ids without its trailing zeros, concatenated.
        lengths: (N,) int32, each row's stored length.
        offsets: (N,) int64, where each row starts in `flat`.
    """

    flat: torch.Tensor
    lengths: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_dense(cls, ids: torch.Tensor) -> RaggedIds:
        """From the tokenizer's (N, L) rows: each row is kept through its last non-zero id
        (the EOT for open_clip's tokenizers), which loses nothing since padding is zero."""
        nonzero = ids != 0
        positions = torch.arange(1, ids.shape[1] + 1)
        lengths = (nonzero * positions).amax(dim=1)  # (N,) last non-zero position + 1
        keep = torch.arange(ids.shape[1]) < lengths.unsqueeze(1)  # (N, L)
        return cls.from_parts(ids[keep].to(torch.int32), lengths.to(torch.int32))

    @classmethod
    def from_parts(cls, flat: torch.Tensor, lengths: torch.Tensor) -> RaggedIds:
        offsets = torch.cumsum(lengths.long(), 0) - lengths.long()
        return cls(flat, lengths, offsets)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def dense(self, rows: torch.Tensor, width: int) -> torch.Tensor:
        """(len(rows), width) int64 ids of `rows`, zero-padded as the tokenizer pads."""
        cols = torch.arange(width)
        lengths = self.lengths[rows].long().unsqueeze(1)  # (R, 1)
        index = self.offsets[rows].unsqueeze(1) + cols  # (R, width)
        valid = cols < lengths
        index = torch.where(valid, index, torch.zeros_like(index))
        if self.flat.numel() == 0:
            return torch.zeros(len(rows), width, dtype=torch.long)
        return torch.where(valid, self.flat[index].long(), torch.zeros_like(index))


@dataclass(frozen=True)
class TripletTokens:
    """The token ids of every triplet of a set, and of the plain prompt "a photo of $".

    Attributes:
        targets / refs / queries: one ragged row per triplet (see `step_texts`).
        plain: (context_length,) int64 ids of the plain prompt.
        context_length: the tokenizer's row width.
    """

    targets: RaggedIds
    refs: RaggedIds
    queries: RaggedIds
    plain: torch.Tensor
    context_length: int

    def __len__(self) -> int:
        return len(self.targets)

    def anchor_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """(2B, context) ids of `[T_t]_B ++ [T_r]_B` for triplet indices `rows` (B,)."""
        width = self.context_length
        return torch.cat([self.targets.dense(rows, width), self.refs.dense(rows, width)])

    def query_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """(2B, context) ids of `[composed query]_B ++ [plain prompt]_B`."""
        plain = self.plain.unsqueeze(0).expand(len(rows), -1)
        return torch.cat([self.queries.dense(rows, self.context_length), plain])


def tokenizer_identity(tokenizer: Callable) -> dict[str, object]:
    """What decides a tokenizer's ids, for cache keys: its class, open_clip's version, its
    context length, and a digest of its vocabulary (open_clip's BPE `encoder`) or the name
    of the Hugging Face tokenizer it wraps."""
    ident: dict[str, object] = {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "open_clip": open_clip.__version__,
        "context_length": getattr(tokenizer, "context_length", None),
    }
    encoder = getattr(tokenizer, "encoder", None)
    if isinstance(encoder, dict):
        digest = hashlib.sha256("\n".join(sorted(encoder)).encode()).hexdigest()[:16]
        ident["vocab"] = digest
        ident["clean"] = getattr(getattr(tokenizer, "clean_fn", None), "__name__", None)
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        ident["hf"] = getattr(inner, "name_or_path", type(inner).__name__)
    return ident


def triplets_digest(triplets: Sequence[TextTriplet]) -> str:
    """SHA-256 of the triplets' text, in order: the set's content fingerprint, the same for
    every source (file, folder, hub id, toy) that yields these rows."""
    h = hashlib.sha256()
    for t in triplets:
        h.update(f"{t.reference}\x1f{t.conditioning}\x1f{t.target}\x1e".encode())
    return h.hexdigest()


_worker_tokenizer: Callable | None = None  # set in each pool worker by _init_worker


def _init_worker(tokenizer: Callable) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer
    # A forked child must not enter the OpenMP pool its parent started (it hangs there).
    torch.set_num_threads(1)


def _tokenize_chunk(texts: list[str]) -> dict[str, torch.Tensor]:
    assert _worker_tokenizer is not None, "called outside a tokenize_ragged pool"
    ragged = RaggedIds.from_dense(_worker_tokenizer(texts))
    return {"flat": ragged.flat, "lengths": ragged.lengths}


def tokenize_ragged(tokenizer: Callable, texts: list[str], workers: int = 1) -> RaggedIds:
    """Tokenise `texts` in batch (across `workers` processes when there are many) into
    ragged rows equal to `tokenizer(texts)` without trailing zeros."""
    if workers <= 1 or len(texts) < POOL_MIN_TEXTS:
        return RaggedIds.from_dense(tokenizer(texts))
    size = -(-len(texts) // (workers * 4))  # a few chunks per worker evens out stragglers
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    # fork where there is one (as DataLoader workers): the children inherit the imported
    # modules and the tokenizer instead of re-importing torch and unpickling the vocabulary
    # (spawn took ~5 s a worker on 2 busy cores); none touches CUDA.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        parts = pool.map(_tokenize_chunk, chunks)
    return RaggedIds.from_parts(
        torch.cat([p["flat"] for p in parts]), torch.cat([p["lengths"] for p in parts])
    )


def default_workers() -> int:
    """Processes for tokenising a large set: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def triplet_tokens(
    triplets: Sequence[TextTriplet],
    tokenizer: Callable,
    template: str,
    symbol: str,
    plain: str,
    *,
    use_cache: bool = True,
    workers: int | None = None,
) -> TripletTokens:
    """The token ids of every triplet (cached; computed once on a miss).

    Args:
        triplets: the training set.
        tokenizer: the CLIP's open_clip tokenizer (list[str] -> (N, context) int64).
        template / symbol / plain: the composed query template with `{mod}`, its pseudo-token
            symbol, and the plain prompt ("a photo of $").
        use_cache: read and write the cache (False: `--no-cache`, computed in memory).
        workers: tokenising processes (None: every core this process may use).
    """
    context = int(tokenizer([plain]).shape[1])
    spec = {
        "kind": "rtd-triplet-token-ids",
        "triplets": triplets_digest(triplets),
        "rows": len(triplets),
        "tokenizer": tokenizer_identity(tokenizer),
        "template": template,
        "symbol": symbol,
        "context_length": context,
        "version": 1,  # bump when the stored layout changes
    }
    n_workers = default_workers() if workers is None else workers

    def compute() -> dict[str, torch.Tensor]:
        texts = step_texts(triplets, template, symbol)
        log(f"tokenising {len(triplets)} triplets ({3 * len(triplets)} texts)")
        out = {}
        for role in ROLES:
            ragged = tokenize_ragged(tokenizer, texts[role], n_workers)
            out[f"{role}.flat"], out[f"{role}.lengths"] = ragged.flat, ragged.lengths
        return out

    stored = cached_tensors("rtd-token-ids", spec, compute, enabled=use_cache)
    ragged = {r: RaggedIds.from_parts(stored[f"{r}.flat"], stored[f"{r}.lengths"]) for r in ROLES}
    return TripletTokens(**ragged, plain=tokenizer([plain])[0], context_length=context)
