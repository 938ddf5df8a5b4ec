"""The LACONIC training objective: InfoNCE over dot products plus FLOPS regularisation.

``L = InfoNCE(q, p) + λ_q(t) · FLOPS(q) + λ_p(t) · FLOPS(p)`` where ``FLOPS(x) = Σ_j (mean_i x_ij)²`` (Paria et
al., 2020: the expected number of multiply-adds of a sparse dot product, made smooth) and ``λ(t)`` rises
quadratically from 0 to λ over the first warm-up steps, so the ranking signal forms before sparsity is pushed.

With several processes the passages (and, for the FLOPS terms, the queries) of every process are gathered with a
gradient-preserving all-gather (:mod:`.distributed`); FLOPS is then the FLOPS of the global batch, the same value a
single process would compute for that batch, and DDP's gradient averaging yields the gradient of the global loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def flops(reps: torch.Tensor) -> torch.Tensor:
    """``Σ_j (mean_i |x_ij|)²`` over a B×V batch of term weights."""
    return reps.abs().mean(dim=0).pow(2).sum()


def flops_weight(step: int, weight: float, warmup_steps: int) -> float:
    """``weight · min(1, (step / warmup_steps)²)``; ``step`` counts optimizer steps done (0 at the start)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(weight)
    return float(weight) * (step / warmup_steps) ** 2


def average_nonzero(reps: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero terms per row (what an index will store per document or query)."""
    return (reps > 0).sum(dim=1).float().mean()


def info_nce(queries: torch.Tensor, passages: torch.Tensor, *, group_size: int, temperature: float = 1.0,
             query_offset: int = 0) -> torch.Tensor:
    """Cross-entropy of each query against all passages; query ``i``'s positive is passage
    ``(query_offset + i) · group_size`` (passages come in groups ``[positive, negative × (group_size − 1)]``).

    Every other passage in the batch, hard negatives of other queries included, is a negative.
    """
    scores = queries @ passages.T / temperature
    targets = (torch.arange(queries.shape[0], device=queries.device) + query_offset) * group_size
    return F.cross_entropy(scores.float(), targets)


def laconic_loss(queries: torch.Tensor, passages: torch.Tensor, *, group_size: int, temperature: float,
                 flops_query: float, flops_passage: float,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None, rank: int = 0) -> dict[str, torch.Tensor]:
    """Named loss terms for one micro-batch of this process.

    ``queries``: B×V; ``passages``: (B·group_size)×V, grouped per query. ``flops_query`` / ``flops_passage`` are the
    weights in force at this step (see :func:`flops_weight`). ``gather`` concatenates a tensor across processes
    (rank order) keeping gradients; with it, negatives come from every process and FLOPS is over the global batch.
    Returns ``loss`` (to backpropagate) and, detached, ``info_nce``, ``flops_q``, ``flops_p`` (unweighted),
    ``nonzero_q``, ``nonzero_p`` (local averages).
    """
    all_queries, all_passages, offset = queries, passages, 0
    if gather is not None:
        all_queries, all_passages = gather(queries), gather(passages)
        offset = rank * queries.shape[0]
    ranking = info_nce(queries, all_passages, group_size=group_size, temperature=temperature, query_offset=offset)
    flops_q = flops(all_queries)
    flops_p = flops(all_passages)
    loss = ranking + flops_query * flops_q + flops_passage * flops_p
    return {
        "loss": loss,
        "info_nce": ranking.detach(),
        "flops_q": flops_q.detach(),
        "flops_p": flops_p.detach(),
        "nonzero_q": average_nonzero(queries.detach()),
        "nonzero_p": average_nonzero(passages.detach()),
    }
