"""Bounded-memory top-k ranking of a gallery by cosine similarity.

The official evaluators form the whole (Q, N) similarity matrix and argsort it (SEARLE/
RTD `validate.py`; at CIRCO scale, 1,000 x 123,403 floats plus int64 indices plus numpy
arrays of names). Here the gallery is scanned in chunks: each query chunk keeps a running
top-k, merged chunk by chunk, so memory is O(q_chunk x g_chunk + Q x k) whatever N is, and
the result equals the full product's top-k.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def chunked_topk(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    exclude: torch.Tensor | None = None,
    query_chunk: int = 1024,
    gallery_chunk: int = 16384,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k gallery items per query by dot product (cosine for L2-normalised inputs).

    Args:
        queries: (Q, D) query features.
        gallery: (N, D) gallery features (moved to `device` chunk by chunk).
        k: how many items to keep (clipped to N, minus one when excluding).
        exclude: (Q,) gallery index to leave out per query (CIRR's reference), -1 for none.
        query_chunk, gallery_chunk: block sizes; peak extra memory is about
            query_chunk * gallery_chunk * 4 bytes.
        device: where the products run (default: the queries' device).

    Returns:
        (scores, indices), each (Q, k), best first; scores in float32, indices long, on
        the queries' device.
    """
    device = torch.device(device) if device is not None else queries.device
    n = gallery.shape[0]
    k = min(k, n - (1 if exclude is not None else 0))
    out_scores = torch.empty(queries.shape[0], k, dtype=torch.float32, device=queries.device)
    out_index = torch.empty(queries.shape[0], k, dtype=torch.long, device=queries.device)
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk].to(device, torch.float32)  # (q, D)
        best_s = torch.full((q.shape[0], 0), float("-inf"), device=device)
        best_i = torch.empty((q.shape[0], 0), dtype=torch.long, device=device)
        ex = None if exclude is None else exclude[qs : qs + query_chunk].to(device)
        # one similarity buffer reused for every gallery chunk: no per-chunk allocation
        # (on CPU a fresh 64 MB block means page faults on every chunk)
        buffer = torch.empty(q.shape[0] * min(gallery_chunk, n), device=device)
        for gs in range(0, n, gallery_chunk):
            g = gallery[gs : gs + gallery_chunk].to(device, torch.float32)  # (g, D)
            sims = buffer[: q.shape[0] * g.shape[0]].view(q.shape[0], g.shape[0])
            torch.matmul(q, g.T, out=sims)  # (q, g)
            if ex is not None:
                local = ex - gs
                inside = (local >= 0) & (local < g.shape[0])
                rows = inside.nonzero().flatten()
                sims[rows, local[rows]] = float("-inf")
            top_s, top_i = sims.topk(min(k, g.shape[0]), dim=1)
            merged_s = torch.cat([best_s, top_s], dim=1)
            merged_i = torch.cat([best_i, top_i + gs], dim=1)
            keep_s, pos = merged_s.topk(min(k, merged_s.shape[1]), dim=1)
            best_s, best_i = keep_s, merged_i.gather(1, pos)
        out_scores[qs : qs + q.shape[0]] = best_s.to(out_scores.device)
        out_index[qs : qs + q.shape[0]] = best_i.to(out_index.device)
    return out_scores, out_index


def full_topk(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive reference: one (Q, N) product, then top-k (tests and the bench)."""
    sims = queries.float() @ gallery.float().T
    if exclude is not None:
        rows = (exclude >= 0).nonzero().flatten()
        sims[rows, exclude[rows]] = float("-inf")
        k = min(k, gallery.shape[0] - 1)
    return sims.topk(min(k, gallery.shape[0]), dim=1)


@torch.no_grad()
def gather_scores(
    queries: torch.Tensor, gallery: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """Scores of per-query candidate lists (CIRR subsets, GeneCIS galleries).

    Args:
        queries: (Q, D); gallery: (N, D); candidates: (Q, C) gallery indices, -1 = padding.

    Returns:
        (Q, C) dot products, -inf at padding.
    """
    safe = candidates.clamp(min=0)
    feats = (
        gallery[safe.flatten()].view(*safe.shape, -1).to(queries.device, torch.float32)
    )  # (Q, C, D)
    scores = torch.einsum("qd,qcd->qc", queries.float(), feats)
    return scores.masked_fill(candidates < 0, float("-inf"))
