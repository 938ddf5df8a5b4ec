"""The whole SciFact corpus through splade-tiny (max length 256) into an Anserini impact index."""

from __future__ import annotations

import pytest

from laconic_pyserini.encode import iter_vectors, read_manifest, verify_collection


@pytest.mark.slow
def test_scifact_encodes_and_indexes_with_anserini(tmp_path, data_root, encoded):
    """The session's shared encoding (``encode_corpus`` on all 5,183 documents) indexed here by a plain Anserini run."""
    from laconic_pyserini import jvm

    enc = encoded("splade-tiny", "scifact")["encoded"]
    manifest = read_manifest(enc)
    assert manifest.complete and manifest.documents == 5183
    assert manifest.counts["invalid_lines"] == 0
    verify_collection(enc, data_root / "scifact")
    vectors = dict(iter_vectors(enc))
    assert len(vectors) == 5183 and sum(map(len, vectors.values())) == manifest.counts["terms"]

    index = tmp_path / "index"
    jvm.autoclass("io.anserini.index.IndexCollection").main(
        ["-collection", "JsonVectorCollection", "-input", str(manifest.collection_dir),
         "-index", str(index), "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
         "-threads", "2"])
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index))
    assert reader.stats()["documents"] == 5183
    # A posting's frequency is the document's impact, exactly as written.
    doc_id = next(iter(vectors))
    term, impact = max(vectors[doc_id].items(), key=lambda item: item[1])
    postings = {p.docid: p.tf for p in reader.get_postings_list(term, analyzer=None)}
    assert postings[reader.convert_collection_docid_to_internal_docid(doc_id)] == impact
