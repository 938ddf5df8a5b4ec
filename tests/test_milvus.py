"""Milvus collections (``--index milvus://…``) against the real Milvus server binary of milvus-lite 2.5.1.

The module starts its own server on a free loopback port and stops it at the end; nothing else is contacted.
SciFact + splade-tiny in Milvus must give the Lucene impact index's top-10 (ids and integer scores) and the same
nDCG@10 / R@100; MiniLM in Milvus must give faiss-flat's top-10; a kill -9 during an export, rerun, must end with
every document once; a different encoder and each fault must be refused with a clear error in bounded time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    from laconic_pyserini.index.milvus_server import free_loopback_port

    return free_loopback_port()


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    """``127.0.0.1:PORT`` of a Milvus server (milvus-lite's real binary) that lives as long as this module."""
    from laconic_pyserini.index.milvus_server import LocalMilvus
    from laconic_pyserini.index.milvus_uri import MilvusError

    try:
        server = LocalMilvus(tmp_path_factory.mktemp("milvus-server")).__enter__()
    except MilvusError as exc:
        pytest.fail(f"{exc} (the test extra: pip install -e '.[dev]')")
    yield server.address
    server.stop()


@pytest.fixture(scope="module")
def scifact(data_root):
    from laconic_pyserini.topics import load_qrels, load_topics

    return {"topics": load_topics(data_root / "scifact", "test"), "qrels": load_qrels(data_root / "scifact", "test")}


@pytest.fixture(scope="module")
def sparse_export(milvus, encoded):
    from laconic_pyserini.index.milvus import export_to_milvus

    built = encoded("splade-tiny", "scifact")
    uri = f"milvus://{milvus}/scifact_splade_tiny"
    manifest = export_to_milvus(built["encoded"], uri, batch_size=1000, progress=False)
    return {**built, "uri": uri, "manifest": manifest}


@pytest.fixture(scope="module")
def query_impacts(sparse_export, scifact):
    """The test queries' integer impacts, encoded once with splade-tiny (the same for Lucene and Milvus)."""
    from laconic_pyserini.searchers.queries import QueryEncoding
    from laconic_pyserini.spec import load_spec

    queries = QueryEncoding(load_spec("splade-tiny"), index_fingerprint=sparse_export["manifest"].get(
        "encoder_fingerprint"))
    return queries.vectors(scifact["topics"])


def same_ranking(expected, got, *, rel=0.0):
    """Equal score lists, and equal ids within every run of equal scores that the cut-off does not split."""
    assert len(got) == len(expected)
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=rel, abs=0 if rel == 0 else 1e-6)
    groups: dict[float, tuple[set, set]] = {}
    for (a, score_a), (b, _) in zip(expected, got):
        key = round(score_a, 3) if rel else score_a
        groups.setdefault(key, (set(), set()))[0].add(a)
        groups[key][1].add(b)
    last = round(expected[-1][1], 3) if rel else expected[-1][1]
    for key, (ids_a, ids_b) in groups.items():
        if key != last:  # ties aside: a tie group at the cut-off may be cut differently
            assert ids_a == ids_b, f"score {key}: {sorted(ids_a)} vs {sorted(ids_b)}"


def _lucene_run(sparse_export, vectors, k):
    from laconic_pyserini.searchers.impact import LaconicSearcher

    return LaconicSearcher(sparse_export["index"]).batch_search(vectors, k)


# -------------------------------------------------------------------------------------------- the URI grammar

def test_location_grammar():
    from laconic_pyserini.index.milvus_uri import MilvusError, parse_milvus_uri

    plain = parse_milvus_uri("milvus://10.0.0.5:19530/scifact")
    assert (plain.endpoint, plain.collection, plain.database, plain.secure) == ("http://10.0.0.5:19530", "scifact",
                                                                               None, False)
    tls = parse_milvus_uri("milvus+tls://milvus.example:443/prod/scifact?timeout=5&server_name=m.example")
    assert (tls.endpoint, tls.database, tls.timeout, tls.tls) == ("https://milvus.example:443", "prod", 5.0,
                                                                   {"server_name": "m.example"})
    assert parse_milvus_uri("milvus://h:1/c?secure=true").secure
    lite = parse_milvus_uri("milvus:///data/x/scifact.db/coll")
    assert (lite.endpoint, lite.collection) == ("/data/x/scifact.db", "coll")
    for bad, why in [("milvus://user:pw@h:19530/c", "MILVUS_TOKEN"), ("milvus://h/c", "HOST:PORT"),
                     ("milvus://h:19530/a/b/c", "/COLLECTION"), ("milvus://h:19530/c?shard=2", "unknown parameter"),
                     ("milvus://h:19530/bad-name", "not a Milvus name"), ("milvus://h:1/c?timeout=0", "timeout")]:
        with pytest.raises(MilvusError, match=why):
            parse_milvus_uri(bad)


# -------------------------------------------------------------------------------------------- sparse = Lucene

def test_sparse_export_records_its_manifest(sparse_export):
    from laconic_pyserini.encode.manifest import read_manifest
    from laconic_pyserini.index.milvus import entity_count
    from laconic_pyserini.index.milvus_manifest import open_collection

    location, client, manifest = open_collection(sparse_export["uri"])
    assert entity_count(client, location) == 5183 == manifest["documents"]
    encoded = read_manifest(sparse_export["encoded"])
    assert manifest["spec"] == encoded.spec and manifest["complete"] and manifest["vectors"] == "sparse"
    assert manifest["term_ids"]["scheme"] == "tokenizer-vocabulary" and manifest["term_ids"]["size"] == 30522
    assert manifest["source"]["parts"] == len(encoded.parts) and manifest["index"]["type"] == "SPARSE_INVERTED_INDEX"


def test_sparse_top10_and_scores_equal_lucene(sparse_export, query_impacts, scifact):
    from laconic_pyserini.eval import evaluate
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    lucene = _lucene_run(sparse_export, query_impacts, 100)
    milvus = MilvusSearcher(sparse_export["uri"]).batch_search(query_impacts, 100, threads=2)
    assert set(milvus) == set(lucene) == set(scifact["topics"])
    for qid in lucene:
        same_ranking(lucene[qid][:10], milvus[qid][:10])
        assert all(float(s).is_integer() for _, s in milvus[qid])  # integer impacts, integer dot products
    ours, theirs = evaluate(scifact["qrels"], milvus, ["nDCG@10", "R@100"]), \
        evaluate(scifact["qrels"], lucene, ["nDCG@10", "R@100"])
    assert {m: round(v, 4) for m, v in ours.items()} == {m: round(v, 4) for m, v in theirs.items()}


def test_search_cli_on_the_fly_and_pre_encoded_equal_lucene(sparse_export, query_impacts, scifact, tmp_path,
                                                            data_root):
    from laconic_pyserini.encode.query import encode_topics
    from laconic_pyserini.eval import evaluate
    from laconic_pyserini.run import read_trec_run
    from laconic_pyserini.search import main as search_main

    lucene = _lucene_run(sparse_export, query_impacts, 100)
    queries = tmp_path / "queries.tsv"
    encode_topics(data_root / "scifact", queries, "splade-tiny")
    runs = {}
    for name, extra in [("fly", ["--topics", str(data_root / "scifact")]), ("pre", ["--pre-encoded", str(queries)])]:
        out = tmp_path / f"{name}.run"
        assert search_main(["--index", sparse_export["uri"], *extra, "--output", str(out), "--hits", "100",
                            "--threads", "2"]) == 0
        runs[name] = read_trec_run(out)
    expected = {m: round(v, 4) for m, v in evaluate(scifact["qrels"], lucene, ["nDCG@10", "R@100"]).items()}
    for name, run in runs.items():
        assert set(run) == set(lucene), name
        for qid in lucene:
            same_ranking(lucene[qid][:10], run[qid][:10])
        assert {m: round(v, 4) for m, v in evaluate(scifact["qrels"], run, ["nDCG@10", "R@100"]).items()} == expected


def test_float_query_weights_score_the_exact_float_dot_product(sparse_export, scifact):
    from laconic_pyserini.encode.manifest import iter_vectors
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    searcher = MilvusSearcher(sparse_export["uri"], query_weights="float")
    topics = dict(list(scifact["topics"].items())[:5])
    weights = searcher.queries.encoder.encode_queries(list(topics.values()))
    documents = list(iter_vectors(sparse_export["encoded"]))
    run = searcher.batch_search(topics, 10)
    for qid, query in zip(topics, weights):
        scores = sorted(((sum(w * doc.get(t, 0) for t, w in query.items() if w > 0), doc_id)
                         for doc_id, doc in documents), reverse=True)
        expected = [(doc_id, score) for score, doc_id in scores[:10]]
        same_ranking(expected, run[qid], rel=1e-5)


def test_float_documents_keep_their_float_weights(milvus, encoded, scifact):
    """A float collection (``encode --weights float``) goes into Milvus as its float weights: the manifest says so,
    and float queries score the exact float dot product with the float documents (not their 1/100 impacts)."""
    from laconic_pyserini.encode.manifest import iter_vectors
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    built = encoded("splade-tiny", "scifact", "float")
    uri = f"milvus://{milvus}/scifact_splade_tiny_float"
    manifest = export_to_milvus(built["encoded"], uri, batch_size=1000, progress=False)
    assert manifest["weights"] == "float"
    documents = list(iter_vectors(built["encoded"]))
    assert any(w != round(w, 2) for _, doc in documents[:5] for w in doc.values())  # really floats
    searcher = MilvusSearcher(uri, query_weights="float")
    topics = dict(list(scifact["topics"].items())[:5])
    weights = searcher.queries.encoder.encode_queries(list(topics.values()))
    run = searcher.batch_search(topics, 10)
    for qid, query in zip(topics, weights):
        scores = sorted(((sum(w * doc.get(t, 0) for t, w in query.items() if w > 0), doc_id)
                         for doc_id, doc in documents), reverse=True)
        same_ranking([(doc_id, score) for score, doc_id in scores[:10]], run[qid], rel=1e-5)


def test_other_encoder_is_refused(sparse_export, tmp_path, data_root):
    from laconic_pyserini.search import main as search_main
    from laconic_pyserini.searchers.milvus import MilvusSearcher
    from laconic_pyserini.spec import SpecError

    with pytest.raises(SpecError, match="does not match"):
        MilvusSearcher(sparse_export["uri"], encoder="splade-pp-ed")
    code = search_main(["--index", sparse_export["uri"], "--topics", str(data_root / "scifact"), "--encoder",
                        "laconic-1b", "--output", str(tmp_path / "run")])
    assert code == 2 and not (tmp_path / "run").exists()


def test_export_of_another_source_into_it_is_refused(sparse_export, encoded):
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.index.milvus_uri import MilvusError

    dense = encoded("minilm", "scifact")["index"]
    with pytest.raises(MilvusError, match="differs in vectors"):
        export_to_milvus(dense, sparse_export["uri"], progress=False)
    # The same export again: complete, nothing doubled.
    again = export_to_milvus(sparse_export["encoded"], sparse_export["uri"], progress=False)
    from laconic_pyserini.index.milvus import entity_count
    from laconic_pyserini.index.milvus_manifest import open_collection

    location, client, _ = open_collection(sparse_export["uri"])
    assert again["complete"] and entity_count(client, location) == 5183


# -------------------------------------------------------------------------------------------- kill -9, rerun

def _index_cli(encoded_dir, uri, **env):
    command = [sys.executable, "-m", "laconic_pyserini.index", "--input", str(encoded_dir), "--index", uri,
               "--batch-size", "500", "--no-progress"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def test_kill_during_export_then_rerun_gives_each_document_once(sparse_export, query_impacts):
    from laconic_pyserini.index.milvus import EXIT_AFTER_ENV, entity_count
    from laconic_pyserini.index.milvus_manifest import read_manifest
    from laconic_pyserini.index.milvus_uri import MilvusError, connect, parse_milvus_uri
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    uri = sparse_export["uri"].rsplit("/", 1)[0] + "/scifact_killed"
    killed = _index_cli(sparse_export["encoded"], uri, **{EXIT_AFTER_ENV: "3"})
    assert killed.returncode == 137, killed.stderr
    location = parse_milvus_uri(uri)
    client = connect(location)
    # The third batch reached the server, its count did not: the worst moment for a kill.
    assert read_manifest(client, location)["committed"] == 1000 and entity_count(client, location) == 1500
    with pytest.raises(MilvusError, match="not finished"):
        MilvusSearcher(uri)
    rerun = _index_cli(sparse_export["encoded"], uri)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming after 1000 of 5183" in rerun.stderr and rerun.stdout.strip() == f"{uri}\t5183 documents"
    assert entity_count(client, location) == 5183
    whole = MilvusSearcher(sparse_export["uri"]).batch_search(query_impacts, 100)
    resumed = MilvusSearcher(uri).batch_search(query_impacts, 100)
    for qid in whole:
        same_ranking(whole[qid], resumed[qid])


# -------------------------------------------------------------------------------------------- dense = faiss

def test_dense_top10_equals_faiss_flat(milvus, encoded, scifact):
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.faiss import FaissSearcher
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    folder = encoded("minilm", "scifact")["index"]
    uri = f"milvus://{milvus}/scifact_minilm"
    manifest = export_to_milvus(folder, uri, progress=False)
    assert (manifest["vectors"], manifest["dimension"], manifest["documents"]) == ("dense", 384, 5183)
    faiss_searcher, searcher = FaissSearcher(folder), MilvusSearcher(uri)
    qids = list(scifact["topics"])
    matrix = faiss_searcher.encode_queries([scifact["topics"][q] for q in qids])
    expected = dict(zip(qids, faiss_searcher.search_vectors(matrix, 10)))
    got = searcher.search_vectors(dict(zip(qids, (row.tolist() for row in matrix))), 10, threads=2)
    for qid in qids:
        same_ranking(expected[qid], got[qid], rel=1e-5)
    on_the_fly = searcher.batch_search({q: scifact["topics"][q] for q in qids[:20]}, 10)
    for qid in qids[:20]:
        same_ranking(expected[qid], on_the_fly[qid], rel=1e-5)


# -------------------------------------------------------------------------------------------- faults

def _timed_error(function, match, limit=15.0):
    from laconic_pyserini.index.milvus_uri import MilvusError

    start = time.monotonic()
    with pytest.raises(MilvusError, match=match):
        function()
    assert time.monotonic() - start < limit


def _accept_until_closed(sock: socket.socket, accepted: list) -> None:
    try:
        while True:
            accepted.append(sock.accept())
    except OSError:  # the test closed the socket: this service is gone
        pass


def test_unreachable_server_and_wrong_port_fail_fast(tmp_path, data_root):
    from laconic_pyserini.search import main as search_main
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    closed = _free_port()
    _timed_error(lambda: MilvusSearcher(f"milvus://127.0.0.1:{closed}/c?timeout=3"), "cannot reach a Milvus")
    # A port that accepts connections and never answers (another service): the worst case for a hang.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    threading.Thread(target=_accept_until_closed, args=(silent, accepted), daemon=True).start()
    try:
        uri = f"milvus://127.0.0.1:{silent.getsockname()[1]}/c?timeout=3"
        _timed_error(lambda: MilvusSearcher(uri), "cannot reach a Milvus")
        start = time.monotonic()
        assert search_main(["--index", uri, "--topics", str(data_root / "scifact"),
                            "--output", str(tmp_path / "run")]) == 2
        assert time.monotonic() - start < 15 and not (tmp_path / "run").exists()
    finally:
        silent.close()


def test_collection_of_another_kind_and_dimension_mismatch(milvus, sparse_export, encoded):
    from pymilvus import DataType, MilvusClient

    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    client = MilvusClient(uri=f"http://{milvus}", timeout=10)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=8)
    client.create_collection("someone_elses", schema=schema)
    uri = f"milvus://{milvus}/someone_elses"
    _timed_error(lambda: MilvusSearcher(uri), "did not make")
    _timed_error(lambda: export_to_milvus(sparse_export["encoded"], uri, progress=False), "another kind")
    _timed_error(lambda: export_to_milvus(encoded("minilm", "scifact")["index"], uri, progress=False),
                 "dimension mismatch: the collection's 'dense' field has dimension 8, .* has 384")
    assert client.get_collection_stats("someone_elses")["row_count"] == 0  # untouched
    assert not client.has_collection("someone_elses__laconic")
    _timed_error(lambda: MilvusSearcher(f"milvus://{milvus}/no_such_collection"), "no such collection")


def test_embedded_milvus_lite_file_is_the_same_grammar(tmp_path, encoded, scifact):
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.faiss import FaissSearcher
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    folder = encoded("minilm", "scifact")["index"]
    uri = f"milvus://{tmp_path}/embedded.db/scifact_minilm"
    assert export_to_milvus(folder, uri, progress=False)["documents"] == 5183
    topics = dict(list(scifact["topics"].items())[:5])
    expected = FaissSearcher(folder).batch_search(topics, 10)
    searcher = MilvusSearcher(uri)
    got = searcher.batch_search(topics, 10)
    for qid in topics:
        same_ranking(expected[qid], got[qid], rel=1e-5)
    # The last client of the file stops its milvus-lite server: the file's lock (one server per file) is free for
    # another process, which pymilvus alone would hold until this process ended.
    searcher.close()
    other = subprocess.run([sys.executable, "-c", "import sys; from laconic_pyserini.searchers.milvus import "
                            "read_collection_manifest as r; print(r(sys.argv[1])['documents'])", uri],
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0 and other.stdout.split()[-1] == "5183", other.stderr[-2000:]


# -------------------------------------------------------------------------------------------- one writer, one identity

@pytest.fixture(scope="module")
def tiny_encoding(tmp_path_factory, data_root):
    """Forty SciFact documents encoded with splade-tiny (cheap inputs for the lease and identity cases)."""
    from laconic_pyserini.encode import encode_corpus

    work = tmp_path_factory.mktemp("milvus-tiny")
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        (work / "corpus.jsonl").write_text("".join(next(f) for _ in range(40)), encoding="utf-8")
    encode_corpus(work / "corpus.jsonl", work / "encoded", "splade-tiny", progress=False)
    return work / "encoded"


def test_a_second_export_into_a_collection_being_written_is_refused(milvus, tiny_encoding):
    from laconic_pyserini.index.milvus import entity_count
    from laconic_pyserini.index.milvus_manifest import read_manifest
    from laconic_pyserini.index.milvus_uri import connect, parse_milvus_uri
    from laconic_pyserini.outputs import WAIT_ENV

    uri = f"milvus://{milvus}/two_writers"
    command = [sys.executable, "-m", "laconic_pyserini.index", "--input", str(tiny_encoding), "--index", uri,
               "--batch-size", "10", "--no-progress"]
    first = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO), WAIT_ENV: "1"},
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # held after its first committed batch, lease in hand
            if WAIT_ENV in line:
                break
        second = _index_cli(tiny_encoding, uri)
    finally:
        first.stdin.close()
        rest = first.stderr.read()
        first.wait(timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "another process is exporting into it" in errors[0] and f"pid {first.pid}" in errors[0]
    assert first.returncode == 0, rest
    location = parse_milvus_uri(uri)
    client = connect(location)
    assert read_manifest(client, location)["complete"] and entity_count(client, location) == 40
    again = _index_cli(tiny_encoding, uri)  # the lease was released: a rerun finds the export complete
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr


def test_same_name_encoder_with_other_weights_is_refused_by_milvus(milvus, tiny_encoding, tmp_path):
    from test_identity import _copy_model

    from laconic_pyserini.fingerprint import FingerprintError
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.searchers.milvus import MilvusSearcher

    uri = f"milvus://{milvus}/identity"
    export_to_milvus(tiny_encoding, uri, progress=False)
    noised = _copy_model("splade-tiny", tmp_path / "m" / "splade-tiny", noise=0.05)
    with pytest.raises(FingerprintError, match="model/model.safetensors differs"):
        MilvusSearcher(uri, encoder=str(noised))
    same = _copy_model("splade-tiny", tmp_path / "same" / "splade-tiny")
    query = {"q": "cancer cells and mutations"}
    assert MilvusSearcher(uri, encoder=str(same)).batch_search(query, 5) == MilvusSearcher(uri).batch_search(query, 5)
