"""laconic-pyserini: LACONIC learned sparse retrieval on Pyserini/Anserini.

The front door, in pyserini's idiom::

    from laconic_pyserini import open_searcher, load_encoder

    with open_searcher("indexes/scifact.splade-tiny") as searcher:
        for hit in searcher.search("does aspirin prevent heart attacks?"):
            print(hit.docid, hit.score)

Importing this package is cheap on purpose: it starts no JVM and imports no torch. The names below are
imported on first use (PEP 562 ``__getattr__``); the JVM starts when an index that needs Anserini is opened,
torch when something encodes.
"""

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS = {
    # search (pyserini's idiom on every backend)
    "open_searcher": "laconic_pyserini.front.searcher",
    "IndexSearcher": "laconic_pyserini.front.searcher",
    "Hit": "laconic_pyserini.front.searcher",
    "Document": "laconic_pyserini.data",
    # encoders (sentence-transformers' naming)
    "load_encoder": "laconic_pyserini.front.encoder",
    "Encoder": "laconic_pyserini.front.encoder",
    "load_spec": "laconic_pyserini.spec",
    # pipeline steps, as the CLIs run them
    "encode_corpus": "laconic_pyserini.encode",
    "encode_dense_corpus": "laconic_pyserini.encode.dense",
    "build_bm25_index": "laconic_pyserini.index.lucene",
    "build_impact_index": "laconic_pyserini.index.impact",
    "build_seismic_index": "laconic_pyserini.index.seismic",
    "write_trec_run": "laconic_pyserini.run",
    "read_trec_run": "laconic_pyserini.run",
    "evaluate": "laconic_pyserini.eval",
    "evaluate_run_file": "laconic_pyserini.eval",
    "load_topics": "laconic_pyserini.topics",
    "load_qrels": "laconic_pyserini.topics",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
