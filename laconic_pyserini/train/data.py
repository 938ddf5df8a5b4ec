"""Training examples and the deterministic order in which they are consumed.

Accepted JSONL layouts (one example a line):
- weak pairs ``{"title", "abstract", "source"?}`` (``training/title_abstract_pairs.jsonl``): the title is the query,
  the abstract the passage;
- pairs ``{"query", "positive" | "pos" | "passage"}``;
- triples ``{"query", "positives" | "pos", "negatives" | "negs"}`` (what :mod:`.mine` writes; WikiQA triples).

A passage is a string or ``{"title", "text"}``; it becomes ``passage: {title} {text}`` through the encoder spec.

The order is a pure function of (seed, micro-batch number): micro-batch ``m`` of the run is the ``m % per_epoch``-th
slice of the ``m // per_epoch``-th seeded permutation, and each rank takes its own part of it. So the data position
of a resumed run is just the step counter, and every process agrees without communicating.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from ..data import DataError, iter_jsonl


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


@dataclass(frozen=True)
class Example:
    query: str
    positives: tuple[Passage, ...]
    negatives: tuple[Passage, ...] = ()


def _passage(path, number: int, value, what: str) -> Passage:
    if isinstance(value, str):
        return Passage("", value)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        title = value.get("title") or ""
        if not isinstance(title, str):
            raise DataError(path, number, f"{what} has a non-string title")
        return Passage(title, value["text"])
    raise DataError(path, number, f"{what} must be a string or {{'title', 'text'}}, not {type(value).__name__}")


def _passages(path, number: int, value, what: str) -> tuple[Passage, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(_passage(path, number, item, what) for item in items)


def parse_example(path, number: int, obj: dict) -> Example:
    """One JSONL object as an :class:`Example` (layouts in the module docstring)."""
    if "abstract" in obj and "title" in obj:
        if not isinstance(obj["title"], str) or not isinstance(obj["abstract"], str):
            raise DataError(path, number, "title and abstract must be strings")
        return Example(obj["title"], (Passage("", obj["abstract"]),))
    query = obj.get("query")
    if not isinstance(query, str):
        raise DataError(path, number, "no 'query' string (and not a title/abstract pair)",
                        "use {query, positive} pairs, {query, positives, negatives} triples or {title, abstract}")
    positive_key = next((k for k in ("positives", "positive", "pos", "passage") if k in obj), None)
    if positive_key is None:
        raise DataError(path, number, "no positive passage ('positives', 'positive', 'pos' or 'passage')")
    positives = _passages(path, number, obj[positive_key], positive_key)
    if not positives:
        raise DataError(path, number, "empty list of positives")
    negative_key = next((k for k in ("negatives", "negs") if k in obj), None)
    negatives = _passages(path, number, obj[negative_key], negative_key) if negative_key else ()
    return Example(query, positives, negatives)


def load_examples(path: str | os.PathLike, *, sources: list[str] | None = None,
                  exclude_sources: list[str] | None = None, max_examples: int | None = None,
                  need_negatives: bool = False) -> list[Example]:
    """Read every example (optionally filtered by the ``source`` field); ``need_negatives`` makes a line without
    negatives an error, as phase 2 cannot train on it."""
    keep, drop = set(sources or ()), set(exclude_sources or ())
    examples = []
    for number, obj in iter_jsonl(path):
        source = obj.get("source")
        if (keep and source not in keep) or (drop and source in drop):
            continue
        example = parse_example(path, number, obj)
        if need_negatives and not example.negatives:
            raise DataError(path, number, "phase 2 needs negatives but this line has none",
                            "mine them with `python -m laconic_pyserini.train.mine`, or drop the line")
        examples.append(example)
        if max_examples is not None and len(examples) >= max_examples:
            break
    if not examples:
        raise DataError(path, None, "no training examples" + (" after the source filter" if keep or drop else ""),
                        "check data.train, data.sources and data.exclude_sources")
    return examples


class BatchOrder:
    """Which examples form micro-batch ``m`` on ``rank``: a seeded permutation per epoch, incomplete tails dropped
    (every rank must hold the same number of rows for the all-gather)."""

    def __init__(self, num_examples: int, batch_size: int, world_size: int = 1, seed: int = 0) -> None:
        self.num_examples, self.batch_size, self.world_size, self.seed = num_examples, batch_size, world_size, seed
        self.global_batch = batch_size * world_size
        self.per_epoch = num_examples // self.global_batch
        if self.per_epoch < 1:
            raise ValueError(f"{num_examples} examples cannot fill one global batch of {self.global_batch} "
                             f"({batch_size} per process × {world_size} processes); lower train.batch_size")
        self._epoch, self._order = -1, []

    def epoch_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self._order = list(range(self.num_examples))
            random.Random(f"order-{self.seed}-{epoch}").shuffle(self._order)
            self._epoch = epoch
        return self._order

    def indices(self, micro_batch: int, rank: int = 0) -> tuple[int, list[int]]:
        """(epoch, example indices) of micro-batch ``micro_batch`` for ``rank``."""
        epoch, slot = divmod(micro_batch, self.per_epoch)
        start = slot * self.global_batch + rank * self.batch_size
        return epoch, self.epoch_order(epoch)[start:start + self.batch_size]


def choose_group(example: Example, index: int, epoch: int, negatives: int, seed: int) -> list[Passage]:
    """``[positive, negative × negatives]`` for one example, the same every time for (seed, epoch, index).

    With fewer mined negatives than asked for, some are repeated rather than the group shrinking (every query
    must bring the same number of passages to the batch)."""
    rng = random.Random(f"group-{seed}-{epoch}-{index}")
    positive = rng.choice(example.positives)
    pool = list(example.negatives)
    if not pool:
        raise ValueError("an example without negatives cannot form a hard-negative group")
    chosen = rng.sample(pool, negatives) if len(pool) >= negatives else pool + rng.choices(pool, k=negatives - len(pool))
    return [positive, *chosen]


def batch_texts(examples: list[Example], indices: list[int], epoch: int, *, negatives: int, seed: int,
                query_text, passage_text) -> tuple[list[str], list[str], int]:
    """(query texts, passage texts grouped per query, group size) for one micro-batch.

    ``negatives`` = 0 is phase 1: one positive per query, in-batch negatives only. ``query_text`` and
    ``passage_text(title, text)`` are the encoder spec's text functions (prefixes)."""
    queries, passages = [], []
    for index in indices:
        example = examples[index]
        queries.append(query_text(example.query))
        if negatives:
            group = choose_group(example, index, epoch, negatives, seed)
        else:
            group = [random.Random(f"group-{seed}-{epoch}-{index}").choice(example.positives)]
        passages.extend(passage_text(p.title, p.text) for p in group)
    return queries, passages, 1 + negatives
