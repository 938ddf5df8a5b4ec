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
# AVX-512): exact_max_pool keeps every product at least this tall so that its floats equal the B×L×V path's.
MIN_PRODUCT_ROWS = 4


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


def exact_max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, head, *,
                   budget_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """:func:`max_pool_logits` for a split linear head (a :class:`~.screened_head.LinearHead`), inference only:
    the same fp32 floats, with no padding position projected.

    The batch's real tokens are packed into one ``N × H`` matrix and projected in products of about
    ``budget_bytes`` of logits (2,198 rows for a 30,522-term vocabulary); each row's maximum is taken over its own
    slice. Of the exact fp32 paths measured on AVX2 (B×L×V chunks, one sequence at a time in 32-256-position
    chunks, packed products of 512 or 2,048 rows; issue 18) this was the fastest: a product with few
    rows pays the packing of the whole ``V × H`` weight again for little work. Each logit is the same dot
    product as in the B×L×V path and max is exact, so the output is byte-identical. One exception is kept out: a
    product of at most three rows takes a different (matrix-vector) kernel with other roundings, so every product
    here has at least :data:`MIN_PRODUCT_ROWS` rows, as the B×L×V path's have (``tests/test_cpu_dispatch.py``
    checks ``torch.equal`` on SciFact with splade-tiny and on a random Llama).
    """
    batch, length = attention_mask.shape
    keep = attention_mask.bool()
    weight, bias = head.weight.detach(), None if head.bias is None else head.bias.detach()
    vocab = weight.shape[0]
    if batch * length < MIN_PRODUCT_ROWS:  # the B×L×V path's one product is short too: take its kernel
        def whole(states):
            states = head.transform(states) if head.transform is not None else states
            return torch.nn.functional.linear(states, weight, bias)
        return max_pool_logits(hidden, attention_mask, whole, vocab, budget_bytes=budget_bytes)
    pooled = hidden.new_full((batch, vocab), float("-inf"))
    tokens = hidden[keep]  # row-major: row 0's tokens, then row 1's, ...
    count = tokens.shape[0]
    if count == 0:
        return pooled
    if count < MIN_PRODUCT_ROWS:  # copies of a real token: their logits are computed and ignored
        tokens = torch.cat([tokens, tokens[:1].expand(MIN_PRODUCT_ROWS - count, -1)])
    if head.transform is not None:
        tokens = head.transform(tokens)
    rows = max(MIN_PRODUCT_ROWS, chunk_positions(1, vocab, tokens.element_size(), budget_bytes))
    bounds = list(range(0, count, rows)) + [count]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_PRODUCT_ROWS:
        del bounds[-2]  # a short tail joins the product before it
    ends = torch.cumsum(keep.sum(dim=1), 0).tolist()
    starts = [0] + ends[:-1]
    for low, high in zip(bounds[:-1], bounds[1:]):
        logits = torch.nn.functional.linear(tokens[low:max(high, MIN_PRODUCT_ROWS)], weight, bias)
        for row in range(batch):
            first, last = max(starts[row], low), min(ends[row], high)
            if first < last:
                part = logits[first - low:last - low].amax(dim=0)
                torch.maximum(pooled[row], part, out=pooled[row])
        del logits
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
