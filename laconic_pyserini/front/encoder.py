"""``load_encoder``: any encoder this toolkit loads, with sentence-transformers' ``encode_query`` / ``encode_document``.

::

    encoder = load_encoder("splade-tiny")                      # a spec name, hub id, model folder or GGUF file
    encoder.encode_query("does aspirin prevent heart attacks?")            # {term: float weight}
    encoder.encode_query("does aspirin prevent heart attacks?", impacts=True)  # {term: rint(w * 100)}, as indexed
    encoder.encode_document(["Aspirin and the heart. A trial of ..."])       # one vector per text

A sparse encoder gives ``{term: weight}`` dicts (float weights, or the integer impacts an impact index holds with
``impacts=True``: :func:`laconic_pyserini.quantize.weigh`, the one rule); a dense one gives float32 numpy rows. One
text in, one vector out; a list in, a list (or a 2-D array) out. Prefixes, max length and top-k come from the spec,
as for every CLI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..spec import EncoderSpec, load_spec

#: Keywords of :func:`load_encoder` that are inference settings; any other keyword overrides a spec field.
INFERENCE_SETTINGS = ("device", "dtype", "quantize", "batch_size")


class Encoder:
    """A loaded encoder of one :class:`~laconic_pyserini.spec.EncoderSpec`; ``model`` is the toolkit's own
    (:class:`~laconic_pyserini.modeling.SparseEncoder` or :class:`~laconic_pyserini.modeling.dense.DenseEncoder`)."""

    def __init__(self, spec: EncoderSpec, model, *, batch_size: int = 32) -> None:
        self.spec, self.model, self.batch_size = spec, model, batch_size

    @property
    def sparse(self) -> bool:
        return self.spec.kind != "dense"

    def encode_query(self, queries: str | Sequence[str], *, impacts: bool = False):
        """Vector(s) of query text(s), with the spec's query prefix."""
        return self._encode(queries, impacts, self.model.encode_queries)

    def encode_document(self, documents: str | Sequence[str], *, impacts: bool = False):
        """Vector(s) of document text(s) (``"title text"``, as a corpus's ``contents``), with the passage prefix."""
        if self.sparse:
            return self._encode(documents, impacts, self.model.encode_documents)
        return self._encode(documents, impacts, lambda texts: self.model.encode_documents([("", t) for t in texts]))

    def _encode(self, texts, impacts: bool, encode):
        from ..quantize import weigh

        one = isinstance(texts, str)
        batch = [texts] if one else list(texts)
        if not self.sparse:
            if impacts:
                raise ValueError(f"{self.spec.name} is a dense encoder: impacts=True applies to sparse encoders")
            rows = encode(batch)
            return rows[0] if one else rows
        weights = "impact" if impacts else "float"
        vectors = [weigh(vector, self.spec.quant_scale, weights)
                   for start in range(0, len(batch), self.batch_size)
                   for vector in encode(batch[start:start + self.batch_size])]
        return vectors[0] if one else vectors

    def __repr__(self) -> str:
        return f"Encoder({self.spec.name!r}, kind={self.spec.kind!r})"


def load_encoder(name_or_path: str | os.PathLike | EncoderSpec, *, device: str = "cpu", dtype: str = "auto",
                 quantize: str = "none", batch_size: int = 32, **spec_fields) -> Encoder:
    """Load an encoder by spec name (``splade-tiny``, ``laconic-1b``), hub id, model folder or GGUF file.

    ``device``, ``dtype`` (``auto``: what this CPU runs fast), ``quantize`` (``int8``/``int4``/``q8_0``/``q4_0``,
    LACONIC decoders) and ``batch_size`` are the CLIs' inference settings; any other keyword (``max_length=128``)
    overrides a spec field, as ``--max-length`` does.
    """
    spec = name_or_path if isinstance(name_or_path, EncoderSpec) else load_spec(str(name_or_path), **spec_fields)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    if spec.kind == "dense":
        if quantize != "none":
            raise ValueError(f"quantize={quantize!r} applies to sparse decoder encoders, not {spec.name!r}")
        from ..modeling.dense import DenseEncoder

        return Encoder(spec, DenseEncoder(spec, device=device, dtype=dtype, batch_size=batch_size),
                       batch_size=batch_size)
    from ..modeling import load_sparse_encoder

    return Encoder(spec, load_sparse_encoder(spec, device=device, dtype=dtype, quantize=quantize),
                   batch_size=batch_size)
