"""Query vectors for sparse searchers: encoded on the fly with the index's spec, or read pre-encoded.

Both ways end in the same integer impacts as the documents (:func:`laconic_pyserini.quantize.query_vectors`, with the
spec's scale), so Lucene's score is the dot product of two quantised vectors, whichever way a query came in.
Backends that score floats may ask for the encoder's float weights instead (``weights="float"``, the LACONIC
authors' way); pre-encoded vectors then may hold any positive numbers.
An encoder whose tokenisation contract differs from the index's, or whose weights or tokenizer files differ from
those the index was built with (:mod:`laconic_pyserini.fingerprint`), is refused before any query is encoded.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections import Counter
from pathlib import Path

from ..data import DataError, iter_jsonl, iter_lines
from ..errors import UsageError
from ..fingerprint import FINGERPRINT_KEY, check_encoder_identity, check_same_encoder
from ..ids import trec_id
from ..quantize import QUERY_WEIGHTS, query_vectors
from ..spec import EncoderSpec, SpecError, load_spec

logger = logging.getLogger(__name__)

#: The largest query impact: Anserini's impact query boxes each weight as a Java Integer.
MAX_QUERY_IMPACT = 2**31 - 1

QueryVector = dict[str, int]
#: A query vector of a float-scoring backend (``weights="float"``): the encoder's positive weights.
FloatQueryVector = dict[str, float]


class QueryEncoding:
    """Turns query texts into quantised vectors with an encoder that matches the index's spec.

    ``encoder`` is ``None`` (the index's own spec), a spec name / model folder / hub id, or a loaded
    :class:`~laconic_pyserini.modeling.SparseEncoder`. The model loads on the first text query, so a searcher fed
    only pre-encoded vectors never imports torch.

    ``quantize`` (``int8``/``int4``) quantises the query encoder (:mod:`laconic_pyserini.modeling.quantized`); the
    index may have been encoded at full precision. ``index_fingerprint`` is the fingerprint recorded in the index's
    manifest (None for an older one): an explicit ``encoder`` is checked against it at once, the index's own encoder
    just before it loads. ``weights`` is ``impact`` (integers, the Lucene contract) or ``float`` (for backends that
    score floats).
    """

    def __init__(self, index_spec: EncoderSpec, encoder=None, *, where: str = "the index", batch_size: int = 32,
                 device: str = "cpu", dtype: str = "auto", quantize: str = "none",
                 index_fingerprint: dict | None = None, weights: str = "impact",
                 unrecorded_encoder: str = "refuse") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if weights not in QUERY_WEIGHTS:
            raise UsageError(f"--query-weights {weights}: choose {' or '.join(QUERY_WEIGHTS)}")
        self.weights = weights
        self.index_spec = index_spec
        self._encoder = None
        if encoder is None:
            spec = index_spec
        elif isinstance(encoder, (str, os.PathLike)):
            spec = load_spec(str(encoder))
        elif isinstance(getattr(encoder, "spec", None), EncoderSpec):
            spec, self._encoder = encoder.spec, encoder
        else:
            raise TypeError(f"encoder must be None, a spec name or path, or a SparseEncoder, not {type(encoder)}")
        check_spec(index_spec, spec, where=where, what="query encoder")
        self.where, self.index_fingerprint, self.unrecorded = where, index_fingerprint, unrecorded_encoder
        self._identity_checked = encoder is not None
        if encoder is not None:
            check_encoder_identity(index_fingerprint, spec, where=where, fix=(
                "search with the encoder it was built with (leave --encoder out), or re-encode the collection with "
                "this one and rebuild the index"), unrecorded=unrecorded_encoder)
        self.spec = spec
        self.batch_size = batch_size
        self.device, self.dtype, self.quantize = device, dtype, quantize
        if dtype in ("fp16", "float16"):
            from ..modeling.cpu import resolve_dtype

            resolve_dtype(dtype, decoder=spec.kind == "decoder", device=device)  # refused on a CPU before any load
        if quantize != "none":  # refused before any query is read, not at the first text query
            from ..modeling.quantized import check_scheme

            check_scheme(quantize, spec.kind, device=device, dtype=dtype)

    @property
    def encoder(self):
        if self._encoder is None:
            from ..modeling import load_sparse_encoder

            if not self._identity_checked:
                check_encoder_identity(self.index_fingerprint, self.spec, where=self.where, fix=(
                    "its model files changed since; restore them, or re-encode the collection and rebuild the index"),
                    unrecorded=self.unrecorded)
            self._encoder = load_sparse_encoder(self.spec, device=self.device, dtype=self.dtype,
                                                quantize=self.quantize)
        return self._encoder

    def record(self) -> dict | None:
        """What encoded this searcher's text queries (spec name and kernels, ``quantize`` among them), for a run's
        manifest; None when no text query was encoded."""
        if self._encoder is None:
            return None
        return {"encoder": self.spec.name, "kernels": self._encoder.kernels}

    def encode(self, texts: list[str]) -> list[QueryVector | FloatQueryVector]:
        """Vectors of query texts, quantised or float as ``weights`` says (the encoder adds the query prefix)."""
        return query_vectors(self.encoder, texts, batch_size=self.batch_size, weights=self.weights)

    def vectors(self, queries: dict[str, str | QueryVector]) -> dict[str, QueryVector | FloatQueryVector]:
        """``{qid: vector}``: texts are encoded in batches, vectors (pre-encoded queries) pass through."""
        texts = {qid: q for qid, q in queries.items() if isinstance(q, str)}
        encoded = dict(zip(texts, self.encode(list(texts.values())))) if texts else {}
        out = {}
        for qid, query in queries.items():
            if isinstance(query, str):
                out[qid] = encoded[qid]
            elif isinstance(query, dict):
                if self.weights == "float":
                    out[qid] = _float_vector(qid, query)
                    continue
                if not all(isinstance(w, numbers.Integral) for w in query.values()):
                    raise ValueError(f"query {qid!r}: a query vector holds integer impacts; quantise float weights "
                                     "with laconic_pyserini.quantize.quantize(weights, spec.quant_scale)")
                out[qid] = query
            else:
                raise TypeError(f"query {qid!r}: expected a text or a {{term: impact}} dict, not {type(query)}")
        return out


def _float_vector(qid: str, query: dict) -> FloatQueryVector:
    if not all(isinstance(w, numbers.Real) and not isinstance(w, bool) for w in query.values()):
        raise ValueError(f"query {qid!r}: a float query vector holds numbers ({{term: weight}})")
    return {term: float(w) for term, w in query.items() if w > 0}


def scorable_terms(vector: QueryVector, vocabulary) -> QueryVector:
    """The part of a query vector Lucene can score: positive impacts of terms the index holds.

    Lucene refuses a negative boost, a zero one adds nothing, and a term the index lacks matches nothing (so a query
    left empty is answered without calling Java at all).
    """
    return {term: impact for term, impact in vector.items() if impact > 0 and term in vocabulary}


def check_spec(index_spec: EncoderSpec, query_spec: EncoderSpec, *, where: str, what: str) -> None:
    """Refuse query vectors from an encoder whose contract differs from the documents' encoder."""
    reason = index_spec.mismatch(query_spec)
    if reason:
        raise SpecError(f"{what} {query_spec.name!r} does not match {where}, which was encoded with "
                        f"{index_spec.name!r} ({reason}); encode queries with --encoder {index_spec.name} "
                        "(or leave --encoder out to use the index's own encoder)")


def read_pre_encoded(path: str | os.PathLike, index_spec: EncoderSpec | None = None, *,
                     index_fingerprint: dict | None | str = "unchecked",
                     unrecorded_encoder: str = "refuse") -> dict[str, QueryVector]:
    """``{qid: {term: impact}}`` from a pre-encoded queries file, in file order.

    - TSV (``.tsv``/``.txt``): ``qid<TAB>term term term…``, each term repeated by its impact (pyserini's format);
    - JSONL: ``{"id": qid, "vector": {term: impact}}`` (``contents`` may be present and is ignored).

    When ``FILE.manifest.json`` (written by ``python -m laconic_pyserini.encode.query``) is present, its spec is
    checked against ``index_spec`` and, when ``index_fingerprint`` is given (the index manifest's, None for an older
    one), its encoder fingerprint against that. Duplicate ids, non-integer impacts and empty files are errors.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such pre-encoded queries file",
                        "write one with `python -m laconic_pyserini.encode.query`")
    if index_spec is not None:
        _check_sidecar(path, index_spec, index_fingerprint, unrecorded_encoder)
    name = path.name.removesuffix(".gz")
    queries: dict[str, QueryVector] = {}
    if name.endswith((".tsv", ".txt")):
        rows = ((number, *_tsv_query(path, number, line)) for number, line in iter_lines(path))
    else:
        rows = ((number, *_json_query(path, number, obj)) for number, obj in iter_jsonl(path))
    for number, qid, vector in rows:
        if qid in queries:
            raise DataError(path, number, f"duplicate query id {qid!r}", "query ids must be unique")
        queries[qid] = vector
    if not queries:
        raise DataError(path, None, "no queries in the file", "encode topics into it first")
    return queries


def _check_sidecar(path: Path, index_spec: EncoderSpec, index_fingerprint: dict | None | str,
                   unrecorded: str = "refuse") -> None:
    sidecar = path.with_name(path.name + ".manifest.json")
    if not sidecar.is_file():
        logger.warning("%s: no %s beside it; cannot check that its queries come from encoder %r",
                       path, sidecar.name, index_spec.name)
        return
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        spec = EncoderSpec.from_dict(recorded["spec"], source=str(sidecar))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(sidecar, None, f"unreadable query manifest ({exc!r})", "re-encode the queries") from None
    check_spec(index_spec, spec, where="the index", what=f"the encoder of {path}")
    if index_fingerprint != "unchecked":
        if recorded.get(FINGERPRINT_KEY) is None:
            check_same_encoder(None, None, where=str(sidecar), what="the encoder of these queries", fix="",
                               unrecorded=unrecorded)
            return
        check_same_encoder(index_fingerprint, recorded.get(FINGERPRINT_KEY), where="the index",
                           what=f"the encoder of {path} (its {sidecar.name})",
                           fix=f"encode the queries with the index's encoder ({index_spec.name}, the same files)",
                           unrecorded=unrecorded)


def _tsv_query(path: Path, number: int, line: str) -> tuple[str, QueryVector]:
    qid, sep, terms = line.partition("\t")
    if not sep:
        raise DataError(path, number, "expected 'qid<TAB>term term …'", "separate the id and the terms with a tab")
    return trec_id(qid, path, number, "query"), dict(Counter(terms.split()))


def _json_query(path: Path, number: int, obj: dict) -> tuple[str, QueryVector]:
    qid = obj.get("id", obj.get("_id", obj.get("qid")))
    if qid is None:
        raise DataError(path, number, "query has no 'id'")
    qid = trec_id(qid, path, number, "query")
    vector = obj.get("vector")
    if not isinstance(vector, dict):
        raise DataError(path, number, f"query {qid!r} has no 'vector' object", "expected {\"id\", \"vector\"}")
    impacts = {}
    for term, weight in vector.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight != int(weight) or abs(weight) > MAX_QUERY_IMPACT:
            raise DataError(path, number, f"query {qid!r}: weight {weight!r} of {term!r} is not an integer impact "
                            f"of at most {MAX_QUERY_IMPACT} (Lucene's Integer)",
                            "pre-encoded vectors hold quantised impacts; write them with laconic_pyserini.encode.query")
        if weight > 0:
            impacts[term] = int(weight)
    return qid, impacts
