"""Encode a corpus with a dense model into a faiss index folder that pyserini's ``FaissSearcher`` opens.

    python -m laconic_pyserini.encode.dense --corpus BEIR_DIR_OR_NAME --encoder SPEC_OR_PATH_OR_HUB_ID --output DIR
        [--index-type flat|hnsw] [--batch-size B] [--device cpu] [--dtype auto|fp32|bf16|fp16] [--hnsw-m 32]
        [--ef-construction 200] [--ef-search 128] [--chunk-size 1024]
    python -m laconic_pyserini.encode.dense --from-index FLAT_DIR --output DIR --index-type hnsw   # no re-encoding

Layout of ``DIR``: ``index`` (a faiss index, inner product), ``docid`` (one id per line, in index order) -- what
``pyserini.search.faiss.FaissSearcher`` reads -- and ``manifest.json`` (``kind: "faiss"``, the encoder spec, counts,
index parameters, encoding throughput), which ``laconic_pyserini.search`` dispatches on.

The index is built aside, in ``.laconic-tmp-DIR`` beside ``DIR`` (:mod:`laconic_pyserini.outputs`), and swapped in
when complete: ``DIR`` never holds half an index. Embeddings are committed there in chunks of ``--chunk-size``
documents (each chunk one atomically renamed ``.npz``), so a killed run rerun with the same command continues
after the last whole chunk. ``DIR`` must be new, empty, or a faiss folder this toolkit wrote (then it is
replaced); anything else is refused, and so is an ``--output`` equal to, inside or containing the input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..console import progress_bar
from ..data import DataError, count_corpus, iter_corpus, require_documents
from ..errors import cli, require_at_least
from ..fingerprint import FINGERPRINT_KEY, encoder_fingerprint
from ..index.faiss import (FORMAT, INDEX_TYPES, KIND, build_faiss_index, finish_faiss, hnsw_params,
                           is_faiss_folder, rebuild_faiss_index, write_faiss_folder)
from ..index.manifest import IndexFolderError, claim_index, read_index_manifest
from ..outputs import TMP_PREFIX, after_commit, aside_path, atomic_path, clean_temps, locked, remove_temp
from ..spec import EncoderSpec, SpecError, current_spec_dict, load_spec

logger = logging.getLogger(__name__)

# Scratch inside the folder built aside: temporary names, so the swap leaves them out (clean_temps).
STATE = TMP_PREFIX + "state.json"
CHUNKS = TMP_PREFIX + "chunks"


def _finish(partial: Path, output: Path) -> Path:
    return finish_faiss(partial, output)


def _recorded_dtype(state_path: Path) -> str | None:
    """The dtype a begun run recorded in its state file (a resumed run keeps it), or None."""
    try:
        recorded = json.loads(state_path.read_text(encoding="utf-8")).get("dtype")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return recorded if recorded in ("fp32", "bf16") else None


def _kernels(dtype: str, device: str) -> dict:
    from ..modeling.cpu import kernel_decision

    return {"dtype": dtype, "device": device, "cpu": kernel_decision().to_dict()}


def encode_dense_corpus(corpus: str | os.PathLike, encoder: str | EncoderSpec, output: str | os.PathLike, *,
                        index_type: str = "flat", batch_size: int = 32, device: str = "cpu", dtype: str = "auto",
                        hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128,
                        chunk_size: int = 1024, as_query: bool | None = None) -> Path:
    """Encode every document of ``corpus`` and write a faiss index folder at ``output``; returns ``output``.

    ``as_query`` (default: BEIR Quora / CQADupStack, by the dataset's name) gives documents the query prefix.
    ``dtype="auto"`` resumes in the dtype a begun run recorded, else
    :func:`~laconic_pyserini.modeling.dense.resolve_dense_dtype`; the manifest records it with the CPU decision
    (``kernels``).
    """
    from .source import describe_corpus, resolve_docs_as_queries
    from ..modeling.dense import resolve_dense_dtype

    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type must be one of {INDEX_TYPES}, not {index_type!r}")
    spec = encoder if isinstance(encoder, EncoderSpec) else load_spec(encoder)
    if spec.kind != "dense":
        raise SpecError(f"encoder {spec.name!r} is a sparse ({spec.kind}) encoder; encode it with "
                        "`python -m laconic_pyserini.encode`, or pass a dense spec (e.g. minilm)")
    as_query = resolve_docs_as_queries(corpus, as_query)
    output = Path(output)
    if dtype == "auto":
        dtype = _recorded_dtype(aside_path(output) / STATE) or "auto"
    dtype = resolve_dense_dtype(spec, dtype, device)
    state = {"format": FORMAT, "spec": spec.to_dict(), "corpus": describe_corpus(corpus), "chunk_size": chunk_size,
             "dtype": dtype, "as_query_documents": as_query, FINGERPRINT_KEY: encoder_fingerprint(spec)}
    claim_index(output, KIND, [state["corpus"]["path"]], flag="--output")
    with locked(output):
        partial = _open_aside(output, state)
        if partial is None:
            logger.info("%s: a finished index was not yet swapped in; finishing", aside_path(output))
            return _finish(aside_path(output), output)
        return _encode_into(corpus, spec, partial, output, state, index_type=index_type, batch_size=batch_size,
                            device=device, dtype=dtype, as_query=as_query,
                            faiss_params=dict(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search))


def _open_aside(output: Path, state: dict) -> Path | None:
    """The aside folder to encode into (resumed when its state matches), or None when it only awaits the swap."""
    partial = aside_path(output)
    state_path = partial / STATE
    if partial.exists() and is_faiss_folder(partial) and not state_path.exists():
        return None
    if partial.exists():
        try:
            previous = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if isinstance(previous, dict) and isinstance(previous.get("spec"), dict):
            previous["spec"] = current_spec_dict(previous["spec"])
        if previous != state:
            logger.warning("%s: left by a different or damaged run; starting over", partial)
            remove_temp(partial)
    chunks_dir = partial / CHUNKS
    chunks_dir.mkdir(parents=True, exist_ok=True)
    clean_temps(chunks_dir)
    if not state_path.exists():
        from .manifest import write_json_atomic

        write_json_atomic(state_path, state)
    return partial


def _encode_into(corpus, spec: EncoderSpec, partial: Path, output: Path, state: dict, *, index_type: str,
                 batch_size: int, device: str, dtype: str, as_query: bool, faiss_params: dict) -> Path:
    total = count_corpus(corpus)
    n_chunks = _encode_missing_chunks(corpus, partial / CHUNKS, state, total,
                                      lambda: _load_model(spec, device, dtype, batch_size))
    ids, vectors, seconds = _read_chunks(partial / CHUNKS, n_chunks)
    if len(ids) != total:
        raise IndexFolderError(f"{partial / CHUNKS}: {len(ids)} embeddings for {total} documents; delete {partial} "
                               "and encode again")
    start = time.perf_counter()
    index = build_faiss_index(vectors, index_type, **faiss_params)
    build_seconds = time.perf_counter() - start
    manifest = {"kind": "faiss", "format": FORMAT, "index_type": index_type, "metric": "inner_product",
                "dimension": int(vectors.shape[1]), "documents": len(ids), "spec": spec.to_dict(),
                FINGERPRINT_KEY: state[FINGERPRINT_KEY], "corpus": state["corpus"], "source": str(corpus), "as_query_documents": as_query, "dtype": dtype,
                "device": device, "batch_size": batch_size, "encode_seconds": round(seconds, 3),
                "encode_docs_per_s": round(len(ids) / seconds, 2) if seconds > 0 else None,
                "build_seconds": round(build_seconds, 3), "kernels": _kernels(dtype, device)}
    if index_type == "hnsw":
        manifest["hnsw"] = hnsw_params(faiss_params["hnsw_m"], faiss_params["ef_construction"],
                                       faiss_params["ef_search"])
    write_faiss_folder(partial, index, ids, manifest)
    return _finish(partial, output)


def _load_model(spec: EncoderSpec, device: str, dtype: str, batch_size: int):
    from ..modeling.dense import DenseEncoder  # torch loads only when a chunk is left to encode

    return DenseEncoder(spec, device=device, dtype=dtype, batch_size=batch_size)


def _encode_missing_chunks(corpus, chunks_dir: Path, state: dict, total: int, load_model) -> int:
    """Encode the chunks not yet under ``chunks_dir`` (the model is loaded only if one is missing), each committed
    as it is written; returns the number of chunks the corpus makes."""
    chunk_size = state["chunk_size"]
    if total == 0:
        raise DataError(state["corpus"]["path"], None, "the corpus holds no documents", "pass a non-empty corpus")
    n_chunks = (total + chunk_size - 1) // chunk_size
    done = {i for i in range(n_chunks) if (chunks_dir / _chunk_name(i)).exists()}
    if done:
        logger.info("resuming: %d of %d chunks already encoded", len(done), n_chunks)
    model = None
    committed = 0
    pending: list[tuple[str, str, str]] = []
    initial = sum(min(chunk_size, total - i * chunk_size) for i in done)
    with progress_bar(total=total, initial=initial, desc=f"encode {state['spec']['name']}") as bar:
        for ordinal, doc in enumerate(iter_corpus(corpus)):
            chunk = ordinal // chunk_size
            if chunk in done:
                continue
            pending.append((doc.id, doc.title, doc.text))
            if len(pending) == chunk_size or ordinal == total - 1:
                model = model or load_model()
                _encode_chunk(model, chunk, pending, chunks_dir, state["as_query_documents"], bar.update)
                logger.info("chunk %d/%d (%d docs)", chunk + 1, n_chunks, len(pending))
                pending = []
                committed += 1
                after_commit(committed)
    if pending:  # count_corpus and iter_corpus disagree: never index a corpus we did not read whole
        raise IndexFolderError(f"{corpus}: read {ordinal + 1} documents but counted {total}; is the file changing?")
    return n_chunks


def _chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:05d}.npz"


def _encode_chunk(model, chunk: int, docs: list[tuple[str, str, str]], chunks_dir: Path, as_query: bool,
                  done) -> None:
    start = time.perf_counter()
    vectors = model.encode_documents([(title, text) for _, title, text in docs], as_query=as_query, done=done)
    seconds = time.perf_counter() - start
    if not np.isfinite(vectors).all():
        raise ValueError(f"chunk {chunk}: the model produced NaN or infinite embeddings; check --dtype and the model")
    target = chunks_dir / _chunk_name(chunk)
    with atomic_path(target) as tmp:  # the temporary name keeps ".npz", so np.savez adds nothing
        np.savez(tmp, vectors=vectors, ids=np.array([doc_id for doc_id, _, _ in docs]), seconds=np.array(seconds))


def _read_chunks(chunks_dir: Path, n_chunks: int) -> tuple[list[str], np.ndarray, float]:
    ids: list[str] = []
    blocks = []
    seconds = 0.0
    for chunk in range(n_chunks):
        with np.load(chunks_dir / _chunk_name(chunk), allow_pickle=False) as data:
            ids.extend(str(x) for x in data["ids"])
            blocks.append(data["vectors"])
            seconds += float(data["seconds"])
    return ids, np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32), seconds


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.encode.dense", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("input")
    source.add_argument("--corpus", help="BEIR folder, dataset name or pyserini JSONL corpus")
    source.add_argument("--from-index", help="a flat faiss folder whose vectors to re-index (instead of --corpus)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", required=True, help="faiss index folder to write")
    out.add_argument("--index-type", choices=INDEX_TYPES, default="flat")
    out.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    out.add_argument("--ef-construction", type=int, default=200)
    out.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth, saved with the index")
    out.add_argument("--chunk-size", type=int, default=1024, help="documents per committed chunk (resume unit)")
    enc = parser.add_argument_group("encoder")
    enc.add_argument("--encoder", help="spec name (minilm), hub id, or local model folder")
    enc.add_argument("--batch-size", type=int, default=32)
    enc.add_argument("--device", default="cpu")
    enc.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                     help="auto (default): fp32 for encoder-only models; a decoder backbone in bf16 where this CPU "
                          "runs bf16 fast; fp16 for GPU encoding (--device cuda)")
    enc.add_argument("--max-length", type=int, help="override the spec's max length")
    args = parser.parse_args(argv)
    require_at_least(1, {"--hnsw-m": args.hnsw_m, "--ef-construction": args.ef_construction,
                         "--ef-search": args.ef_search, "--chunk-size": args.chunk_size,
                         "--batch-size": args.batch_size, "--max-length": args.max_length})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    hnsw = dict(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search)
    if args.from_index:
        path = rebuild_faiss_index(args.from_index, args.output, args.index_type, **hnsw)
    else:
        if not (args.corpus and args.encoder):
            parser.error("--corpus and --encoder are required (or --from-index FLAT_DIR)")
        require_documents(args.corpus)  # before the model loads
        spec = load_spec(args.encoder, max_length=args.max_length)
        path = encode_dense_corpus(args.corpus, spec, args.output, index_type=args.index_type,
                                   batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                                   chunk_size=args.chunk_size, **hnsw)
    manifest = read_index_manifest(path)
    print(f"{path}\t{manifest['documents']} documents\t{manifest['dimension']} dimensions\t{manifest['index_type']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
