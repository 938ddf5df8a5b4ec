"""The sparse head shared by encoding and training: masked max-pool of LM-head logits, then log1p(relu).

``log1p(relu(.))`` is monotone, so max-pooling the raw logits and activating the pooled B×V matrix afterwards
gives exactly the max-pool of the activated logits. The LM head is applied to a few positions at a time and
reduced into a running maximum, so the B×L×V logits tensor never exists: with Llama-3's 128,256-token vocabulary a
batch of 32×256 would take 4 GB in fp32. In training the LM head's backward is custom: it keeps only the B×V argmax
positions and rebuilds each chunk's gradient in turn, so training memory does not grow with L×V either.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Bytes of logits one chunk may hold (B × chunk × V × element size).
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Products of at most 3 rows take BLAS's matrix-vector kernel, whose roundings differ (measured on MKL, AVX2 and
# AVX-512): exact_max_pool keeps every product at least this tall.
MIN_PRODUCT_ROWS = 4
# Logits one vocabulary block of one sequence may hold: well inside a core's L2 cache (1-2 MB on current x86).
DEFAULT_BLOCK_BYTES = 512 * 2**10
MIN_BLOCK_COLUMNS = 64


def chunk_positions(batch_size: int, vocab_size: int, element_size: int,
                    budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """How many sequence positions fit in one chunk of logits under ``budget_bytes`` (at least one)."""
    return max(1, budget_bytes // max(1, batch_size * vocab_size * element_size))


def _fill_padding(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # Padding positions take a copy of their sequence's first position: a copy's logits equal that position's, so
    # they can never change the max, and no B×c×V masked copy of the logits has to be written (a third of the
    # head's time on CPU). Sequences without any token are set to -inf at the end.
    return torch.where(keep[:, :, None], hidden, hidden[:, :1])


def _empty_rows_to_minus_inf(pooled: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    empty = ~keep.any(dim=1)
    if bool(empty.any()):
        pooled = pooled.masked_fill(empty[:, None], float("-inf"))
    return pooled


def max_pool_logits(hidden: torch.Tensor, attention_mask: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                    vocab_size: int, *, chunk_size: int | None = None,
                    budget_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """Max over non-padding positions of ``head(hidden)``, computed ``chunk_size`` positions at a time.

    ``hidden``: B×L×H; ``attention_mask``: B×L (1 = token, 0 = padding); ``head`` maps B×c×H to B×c×V.
    Returns B×V raw logits; a sequence with no tokens gets ``-inf`` everywhere (0 after the activation).
    When gradients are wanted and ``head`` is a ``torch.nn.Linear`` (an LM head), a custom backward keeps only
    the B×V argmax positions, so training memory does not grow with L×V either.
    """
    batch, length = attention_mask.shape
    if chunk_size is None:
        chunk_size = chunk_positions(batch, vocab_size, hidden.element_size(), budget_bytes)
    keep = attention_mask.bool()
    if length == 0:
        return hidden.new_full((batch, vocab_size), float("-inf"))
    if torch.is_grad_enabled() and isinstance(head, torch.nn.Linear):
        return _LinearMaxPool.apply(hidden, head.weight, head.bias, keep, chunk_size)
    filled = _fill_padding(hidden, keep)
    # Without gradients amax is the fastest reduction; with a generic head, max(dim) at least keeps only indices.
    track = torch.is_grad_enabled()
    pooled = None
    for start in range(0, length, chunk_size):
        logits = head(filled[:, start:start + chunk_size])
        chunk_max = logits.max(dim=1).values if track else logits.amax(dim=1)
        del logits
        pooled = chunk_max if pooled is None else torch.maximum(pooled, chunk_max)
    return _empty_rows_to_minus_inf(pooled, keep)


class _LinearMaxPool(torch.autograd.Function):
    """max over positions of ``hidden @ weight.T + bias``, saving only the argmax positions for backward.

    Backward rebuilds each chunk's (one-hot in position) logit gradient, B×c×V, one chunk at a time: the same
    transient memory as the forward, and no saved tensor of size B×L×V or (L / chunk)×B×V.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, keep, chunk_size):
        batch, length, _ = hidden.shape
        filled = _fill_padding(hidden, keep)
        pooled = argmax = None
        for start in range(0, length, chunk_size):
            logits = torch.nn.functional.linear(filled[:, start:start + chunk_size], weight, bias)
            values, positions = logits.max(dim=1)
            del logits
            positions += start
            if pooled is None:
                pooled, argmax = values, positions
            else:
                better = values > pooled
                pooled = torch.where(better, values, pooled)
                argmax = torch.where(better, positions, argmax)
        # A maximum found on a padding copy belongs to the sequence's first position.
        argmax = torch.where(keep.gather(1, argmax), argmax, torch.zeros_like(argmax))
        ctx.save_for_backward(hidden, weight, argmax.to(torch.int32), keep)
        ctx.has_bias = bias is not None
        ctx.chunk_size = chunk_size
        return _empty_rows_to_minus_inf(pooled, keep)

    @staticmethod
    def backward(ctx, grad_pooled):
        hidden, weight, argmax, keep = ctx.saved_tensors
        argmax = argmax.long()
        batch, length, _ = hidden.shape
        # Sequences without tokens had no maximum: nothing flows back from them.
        grad_pooled = grad_pooled.masked_fill(~keep.any(dim=1)[:, None], 0).to(weight.dtype)
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight) if want_weight else None
        chunk = ctx.chunk_size
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            inside = (argmax >= start) & (argmax < stop)
            if not bool(inside.any()):
                continue
            grad_logits = hidden.new_zeros((batch, stop - start, weight.shape[0]))
            grad_logits.scatter_(1, (argmax - start).clamp(0, stop - start - 1).unsqueeze(1),
                                 (grad_pooled * inside).unsqueeze(1))
            if want_hidden:
                grad_hidden[:, start:stop] = grad_logits @ weight
            if want_weight:
                grad_weight += grad_logits.flatten(0, 1).T @ hidden[:, start:stop].flatten(0, 1)
            del grad_logits
        grad_bias = grad_pooled.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None


def vocab_columns(rows: int, vocab_size: int, element_size: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Vocabulary columns per product so that one sequence's block of logits (``rows`` × columns) stays within
    ``block_bytes``: 546 columns for a 240-token SciFact document in fp32, the whole vocabulary for short queries."""
    return max(MIN_BLOCK_COLUMNS, min(vocab_size, block_bytes // max(1, rows * element_size)))


def sequence_max_pool(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
                      block_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """``out[v] = max_t (tokens[t] · weight[v] + bias[v])`` for one sequence's T×H ``tokens`` (T ≥ 1), computed a
    block of vocabulary columns at a time, each block's logits reduced while they are still in cache."""
    vocab = weight.shape[0]
    columns = vocab_columns(tokens.shape[0], vocab, tokens.element_size(), block_bytes)
    for start in range(0, vocab, columns):
        stop = min(start + columns, vocab)
        logits = torch.nn.functional.linear(tokens, weight[start:stop], None if bias is None else bias[start:stop])
        torch.amax(logits, dim=0, out=out[start:stop])
    return out


def exact_max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, head, *,
                   block_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """:func:`max_pool_logits` for a split linear head (a :class:`~.screened_head.LinearHead`), inference only:
    every logit in fp32, no padding position projected.

    One sequence at a time, its real tokens times a block of vocabulary columns whose logits fit in a core's L2
    cache (:func:`vocab_columns`), reduced at once: the B×L×V path writes each logit to memory and reads it back,
    which took as long as the products themselves (34.7 → 18.4 ms per SciFact document on AVX2, 29.0 →
    11.4 on AVX-512, splade-tiny, one thread). Each logit is the same fp32 dot product as in the B×L×V path, but a
    BLAS may pick another kernel (another order of its K-loop) for another shape, so floats can differ from that
    path by a few units in the last place (MKL's AVX2 kernels do; its AVX-512 ones did not): the quantised impacts
    are the same, and ``tests/test_cpu_dispatch.py`` checks both. A sequence of at most three tokens is padded
    with copies of its first (a copy's logits cannot change a maximum) so that no product takes BLAS's
    matrix-vector kernel. A sequence without tokens gets −inf.
    """
    keep = attention_mask.bool()
    weight, bias = head.weight.detach(), None if head.bias is None else head.bias.detach()
    pooled = hidden.new_full((attention_mask.shape[0], weight.shape[0]), float("-inf"))
    counts = keep.sum(dim=1).tolist()
    if sum(counts) == 0:
        return pooled
    tokens = hidden[keep]  # row-major: row 0's tokens, then row 1's, ...
    if head.transform is not None:
        tokens = head.transform(tokens)
    start = 0
    for row, count in enumerate(counts):
        if count:
            own = tokens[start:start + count]
            if count < MIN_PRODUCT_ROWS:
                own = torch.cat([own, own[:1].expand(MIN_PRODUCT_ROWS - count, -1)])
            sequence_max_pool(own, weight, bias, pooled[row], block_bytes)
        start += count
    return pooled


def activate(pooled: torch.Tensor, activation: str = "log1p_relu", offset: float = 0.0) -> torch.Tensor:
    """The term-weight activation applied after pooling, to ``pooled − offset`` (in fp32, so bf16 logits lose no
    more precision). ``offset`` is the spec's ``logit_offset`` (0 for LACONIC and SPLADE)."""
    pooled = pooled.float()
    if offset:
        pooled = pooled - offset
    if activation == "log1p_relu":
        return torch.log1p(torch.relu(pooled))
    if activation == "relu":
        return torch.relu(pooled)
    raise ValueError(f"unknown sparse activation {activation!r}; use log1p_relu or relu")


def sparse_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                vocab_size: int, *, activation: str = "log1p_relu", offset: float = 0.0,
                chunk_size: int | None = None, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """B×V term weights: ``activation(max over tokens of head(hidden) − offset)``; differentiable."""
    pooled = max_pool_logits(hidden, attention_mask, head, vocab_size, chunk_size=chunk_size,
                             budget_bytes=budget_bytes)
    return activate(pooled, activation, offset)


def keep_top_k(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Zero all but the ``k`` largest weights of each row (all rows unchanged when ``k`` is None or ≥ V)."""
    if k is None or k >= weights.shape[-1]:
        return weights
    values, indices = weights.topk(k, dim=-1)
    return torch.zeros_like(weights).scatter(-1, indices, values)


def lm_head_function(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable that turns a decoder's final (normed) hidden states into vocabulary logits."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
    return head
