"""An encoder's tokenisation contract: special tokens on or off, truncation at the spec's max length, padding.

Used by :class:`~.sparse_encoder.SparseEncoder` and by training, which needs the tokens without a second copy of the
model's head.
"""

from __future__ import annotations

import torch

from ..spec import EncoderSpec


def special_token_ids(tokenizer) -> set[int]:
    """Every id the tokenizer marks special (Llama-3: BOS, EOS and the 250 reserved tokens; BERT: [CLS] …)."""
    ids = set(tokenizer.all_special_ids)
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(token_id)
    return ids


class SpecTokenizer:
    """Texts → right-padded ``input_ids`` / ``attention_mask`` as ``spec`` says (a vocabulary of ``vocab_size``)."""

    def __init__(self, spec: EncoderSpec, tokenizer, vocab_size: int) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.special_ids = special_token_ids(tokenizer)
        if spec.add_special_tokens and tokenizer.pad_token_id is not None:
            self.pad_id = tokenizer.pad_token_id  # as the model was trained
        else:
            # Without special tokens, padding is any ordinary id: it is masked out, and no special id reaches the
            # model.
            self.pad_id = next(i for i in range(vocab_size) if i not in self.special_ids)

    def token_ids(self, texts: list[str], max_length: int | None) -> list[list[int]]:
        kwargs = {"add_special_tokens": self.spec.add_special_tokens}
        if max_length is not None:
            kwargs.update(truncation=True, max_length=max_length)
        if not self.spec.add_special_tokens:
            # A text that happens to contain "<|begin_of_text|>" must not become the BOS id.
            kwargs["split_special_tokens"] = True
        return self.tokenizer(list(texts), **kwargs)["input_ids"]

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` of already-prefixed texts, cut at ``max_length``."""
        ids = self.token_ids(texts, self.spec.max_length)
        length = max(max((len(row) for row in ids), default=0), 1)
        input_ids = torch.full((len(ids), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for row, token_ids in enumerate(ids):
            input_ids[row, :len(token_ids)] = torch.tensor(token_ids, dtype=torch.long)
            attention_mask[row, :len(token_ids)] = 1
        return input_ids, attention_mask

    def tokenize_lengths(self, texts: list[str]) -> list[int]:
        """Token counts (capped at ``max_length``) of texts as the encoder would see them."""
        return [min(len(row), self.spec.max_length) for row in self.token_ids(texts, None)]
