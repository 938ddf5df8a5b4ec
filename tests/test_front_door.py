"""The front door: pyserini's searcher idiom on every backend, ``load_encoder``, lazy top-level names, and impact
indexes that keep their documents. Real indexes of the first 200 SciFact documents (BM25, Lucene impact, Seismic,
faiss, Milvus) and real small models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_same_impacts, model_dir

QUERIES = {"1": "0-dimensional biomaterials show inductive properties.",
           "3": "1,000 genomes project enables mapping of genetic sequence variation consistent with forensic use.",
           "5": "5% of perinatal mortality is due to low birth weight."}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(scifact200):
    from laconic_pyserini.data import iter_corpus

    return {doc.id: doc for doc in iter_corpus(scifact200)}


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory, splade200):
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.index.milvus_server import LocalMilvus

    server = LocalMilvus(tmp_path_factory.mktemp("milvus-server")).__enter__()
    uri = f"milvus://{server.address}/scifact200_splade"
    export_to_milvus(splade200["encoded"], uri, batch_size=1000, progress=False)
    yield uri
    server.stop()


def _locations(kind, scifact200, splade200, tmp_path_factory, milvus_uri_factory):
    if kind == "bm25":
        from laconic_pyserini.index.lucene import build_bm25_index

        return build_bm25_index(scifact200, tmp_path_factory.mktemp("bm25") / "index", threads=2), {}
    if kind == "faiss":
        from laconic_pyserini.encode.dense import encode_dense_corpus

        model_dir("all-MiniLM-L6-v2")
        return encode_dense_corpus(scifact200, "minilm", tmp_path_factory.mktemp("faiss") / "index"), {}
    if kind == "seismic":
        from laconic_pyserini.index.seismic import build_seismic_index

        build_seismic_index(splade200["index"])
        return splade200["index"], {"backend": "seismic"}
    if kind == "milvus":
        return milvus_uri_factory(), {}
    return splade200["index"], {}


@pytest.mark.parametrize("kind", ["impact", "bm25", "faiss", "seismic", "milvus"])
def test_every_backend_speaks_pyserini(kind, scifact200, splade200, corpus, tmp_path_factory, request):
    from laconic_pyserini import Hit, open_searcher

    location, options = _locations(kind, scifact200, splade200, tmp_path_factory,
                                   lambda: request.getfixturevalue("milvus_uri"))
    with open_searcher(location, **options) as searcher:
        hits = searcher.search(QUERIES["1"])  # one default k, 10, on every backend
        assert len(hits) == 10 and all(isinstance(hit, Hit) for hit in hits)
        docid, score = hits[0]  # tuple unpacking keeps working
        assert (docid, score) == (hits[0].docid, hits[0].score)
        # What the wrapped backend's own protocol answers, hit for hit.
        assert hits == searcher.backend.batch_search({"q": QUERIES["1"]}, 10, 1)["q"]
        results = searcher.batch_search(list(QUERIES.values()), list(QUERIES), k=5, threads=2)
        assert list(results) == list(QUERIES)
        for qid, text in QUERIES.items():
            _same_hits(results[qid], searcher.search(text, k=5), dense=kind == "faiss")
        for qid, found in searcher.batch_search(QUERIES, k=3).items():
            _same_hits(found, results[qid][:3], dense=kind == "faiss")
        for hit in hits:
            assert searcher.doc(hit.docid).contents == corpus[hit.docid].contents
        assert searcher.doc("no-such-document") is None


def _same_hits(got, want, *, dense: bool) -> None:
    """Equal hits; a dense query encoded alone or in a batch (padded) differs in the last float bits."""
    assert [hit.docid for hit in got] == [hit.docid for hit in want]
    assert [hit.score for hit in got] == ([pytest.approx(hit.score, rel=1e-5) for hit in want] if dense
                                          else [hit.score for hit in want])


def test_pyserini_argument_mistakes_are_named(splade200):
    from laconic_pyserini import open_searcher
    from laconic_pyserini.errors import UsageError

    with open_searcher(splade200["index"]) as searcher:
        with pytest.raises(UsageError, match="same length"):
            searcher.batch_search(["a", "b"], ["q1"])
        with pytest.raises(UsageError, match="give the query ids"):
            searcher.batch_search(["a", "b"])
        with pytest.raises(UsageError, match="once"):
            searcher.batch_search(["a", "b"], ["q1", "q1"])
        with pytest.raises(UsageError, match="positive integer"):
            searcher.search("a", k=0)


def test_impact_index_keeps_raw_documents_unless_told(splade200, corpus, tmp_path):
    from laconic_pyserini import build_impact_index, open_searcher

    lean = build_impact_index(splade200["encoded"], tmp_path / "lean", threads=2, store_raw=False)
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (splade200["index"], lean)]
    assert [m["store_raw"] for m in manifests] == [True, False]
    size = [sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file()) for folder in (splade200["index"], lean)]
    assert size[0] > 2 * size[1]  # the raw lines hold each document's vector too (docs/indexing.md)
    with open_searcher(splade200["index"]) as full, open_searcher(lean) as searcher:
        assert searcher.search(QUERIES["3"]) == full.search(QUERIES["3"])
        # Without raw documents, doc() reads the corpus the manifest names: title and text apart.
        for docid in ("4983", "70490"):
            assert searcher.doc(docid) == corpus[docid]
            assert full.doc(docid).contents == corpus[docid].contents


def test_load_encoder_gives_float_weights_and_the_indexed_impacts(splade200):
    from laconic_pyserini import load_encoder
    from laconic_pyserini.encode.manifest import iter_documents
    from laconic_pyserini.quantize import quantize

    encoder = load_encoder("splade-tiny")
    weights = encoder.encode_query(QUERIES["1"])
    assert weights and all(isinstance(w, float) and w > 0 for w in weights.values())
    assert encoder.encode_query(QUERIES["1"], impacts=True) == quantize(weights, 100.0)
    batched = encoder.encode_query([QUERIES["1"], QUERIES["5"]])[0]  # padded in a batch: the last float bits move
    assert batched.keys() == weights.keys() and batched == pytest.approx(weights, rel=1e-4)
    # A document encodes to what the encoded collection holds for it.
    stored = {doc_id: (contents, vector) for doc_id, contents, vector in iter_documents(splade200["encoded"])}
    texts = [stored[doc_id][0] for doc_id in ("4983", "70490")]
    assert_same_impacts(dict(zip(("4983", "70490"), encoder.encode_document(texts, impacts=True))),
                        {doc_id: stored[doc_id][1] for doc_id in ("4983", "70490")})
    dense = load_encoder("minilm")
    rows = dense.encode_query([QUERIES["1"], QUERIES["5"]])
    assert rows.shape == (2, 384) and abs(float((rows[0] ** 2).sum()) - 1) < 1e-4


def test_importing_the_package_stays_cheap_and_every_name_resolves():
    code = ("import sys, laconic_pyserini as lp; heavy = sorted(m for m in ('torch', 'jnius', 'pyserini', 'faiss', "
            "'transformers') if m in sys.modules); print(heavy); print(sorted(set(lp.__all__) - set(dir(lp))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]
    import laconic_pyserini

    for name in laconic_pyserini.__all__:
        assert getattr(laconic_pyserini, name) is not None, name
    with pytest.raises(AttributeError):
        laconic_pyserini.no_such_name  # noqa: B018
