"""The search service as a client sees it: a real server process on a free loopback port, real indexes (the
shared fixtures' splade-tiny impact index and BM25 index of SciFact), real HTTP.

Every SciFact test query's hits over REST equal the search CLI's run (ids, scores, order), with batching on
(queries sent by 16 concurrent clients, so batches form) and off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from laconic_pyserini.run import read_trec_run
from laconic_pyserini.topics import load_topics

from serve_process import REPO, ServerProcess

KEY = "test-key-7f3a"


@pytest.fixture(scope="module")
def splade_index(encoded):
    return encoded("splade-tiny", "scifact")["index"]


@pytest.fixture(scope="module")
def topics(data_root):
    return load_topics(data_root / "scifact", "test")


@pytest.fixture(scope="module")
def cli_run(splade_index, data_root, tmp_path_factory):
    """The search CLI's top 10 of every SciFact test query: the reference."""
    out = tmp_path_factory.mktemp("cli") / "run.txt"
    subprocess.run([sys.executable, "-m", "laconic_pyserini.search", "--index", str(splade_index), "--topics",
                    str(data_root / "scifact"), "--output", str(out), "--hits", "10"], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO), "LACONIC_PROGRESS": "0"})
    return read_trec_run(out)


@pytest.fixture(scope="module")
def batched(splade_index, bm25_index, tmp_path_factory):
    """Batching on (the defaults), an API key, two indexes."""
    server = ServerProcess(["--index", f"splade={splade_index}", "--index", f"bm25={bm25_index('scifact')}"],
                           api_key=KEY, log=tmp_path_factory.mktemp("serve") / "batched.log")
    yield server
    server.terminate()


@pytest.fixture(scope="module")
def unbatched(splade_index, tmp_path_factory):
    """Batching off and a small queue bound."""
    server = ServerProcess(["--index", f"splade={splade_index}", "--no-batching", "--queue-bound", "4",
                            "--max-hits", "100", "--max-query-chars", "300", "--max-body-bytes", "2000"],
                           log=tmp_path_factory.mktemp("serve") / "unbatched.log")
    yield server
    server.terminate()


def search_path(index: str, query: str, hits: int = 10, **params) -> str:
    return f"/v1/{index}/search?" + urllib.parse.urlencode({"query": query, "hits": hits, **params})


def rest_run(server: ServerProcess, topics: dict, clients: int) -> dict:
    def one(item):
        qid, text = item
        status, body, _ = server.get(search_path("splade", text))
        assert status == 200, body
        return qid, [(c["docid"], c["score"]) for c in body["candidates"]]

    with ThreadPoolExecutor(clients) as pool:
        return dict(pool.map(one, topics.items()))


def batch_sizes(server: ServerProcess) -> dict[str, float]:
    """``{le: count}`` of the encode batch-size histogram."""
    status, body, _ = server.get("/metrics")
    sizes = {}
    for line in body["text"].splitlines():
        if line.startswith("laconic_encode_batch_size_bucket"):
            sizes[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return sizes


def queue_depth(server: ServerProcess) -> float:
    text = server.get("/metrics")[1]["text"]
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("laconic_queue_depth ")))


def test_rest_equals_search_cli_with_batching(batched, topics, cli_run):
    got = rest_run(batched, topics, clients=16)
    assert got == {qid: cli_run.get(qid, []) for qid in topics}
    sizes = batch_sizes(batched)
    assert sizes["1.0"] < sizes["+Inf"], sizes  # some queries were encoded in batches of several


def test_rest_equals_search_cli_without_batching(unbatched, topics, cli_run):
    got = rest_run(unbatched, topics, clients=3)
    assert got == {qid: cli_run.get(qid, []) for qid in topics}
    sizes = batch_sizes(unbatched)
    assert sizes["1.0"] == sizes["+Inf"], sizes


def test_pyserini_contract_and_documents(batched, data_root):
    status, body, _ = batched.get(search_path("bm25", "aspirin heart attack", hits=3))
    assert status == 200
    assert set(body) == {"api", "index", "query", "candidates"} and body["api"] == "v1"
    assert body["index"] == "bm25" and body["query"] == {"text": "aspirin heart attack"}
    assert [c["rank"] for c in body["candidates"]] == [1, 2, 3]
    first = body["candidates"][0]
    assert set(first) == {"docid", "score", "rank", "doc"}
    status, doc, _ = batched.get(f"/v1/bm25/doc/{first['docid']}")
    assert status == 200 and doc["docid"] == first["docid"] and doc["doc"] == first["doc"]
    import json

    corpus = {}
    with open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            if obj["_id"] == first["docid"]:
                corpus = obj
    assert doc["doc"]["title"] == corpus["title"] and doc["doc"]["text"] == corpus["text"]
    status, raw, _ = batched.get(f"/v1/splade/doc/{first['docid']}?parse=false")
    assert status == 200 and json.loads(raw["doc"])["text"] == corpus["text"]
    assert batched.get("/v1/bm25/doc/no-such-doc")[0] == 404
    assert batched.get("/v1/nope/search?query=x")[0] == 400
    assert batched.get("/v1/bm25/search")[:2] == (400, {"error": "Parameter 'query' is required"})
    assert batched.get("/v1/bm25/search?query=x&parse=maybe")[0] == 400


def test_explanations_sum_to_scores(batched):
    status, body, _ = batched.get(search_path("splade", "vitamin D deficiency and bone fractures", explain="true"))
    assert status == 200 and body["candidates"]
    for candidate in body["candidates"]:
        rows = candidate["explanation"]
        assert rows and sum(row["contribution"] for row in rows) == candidate["score"]
        assert all(row["contribution"] == row["query_weight"] * row["doc_weight"] for row in rows)
    terms = body["query"]["terms"]
    assert any(t["expansion"] for t in terms) and any(not t["expansion"] for t in terms)
    assert {t["term"] for t in terms} >= {row["term"] for row in body["candidates"][0]["explanation"]}


def test_post_search_texts_and_vectors(batched, topics, cli_run):
    qids = list(topics)[:5]
    status, body, _ = batched.request("POST", "/v1/splade/search",
                                      {"queries": {q: topics[q] for q in qids}, "hits": 10})
    assert status == 200
    assert {q: [(c["docid"], c["score"]) for c in r["candidates"]] for q, r in body["results"].items()} == \
        {q: cli_run[q] for q in qids}
    status, explained, _ = batched.request("POST", "/v1/splade/search",
                                           {"queries": {"q": topics[qids[0]]}, "explain": True})
    vector = {t["term"]: t["weight"] for t in explained["results"]["q"]["query"]["terms"]}
    status, by_vector, _ = batched.request("POST", "/v1/splade/search", {"queries": {"v": vector}})
    assert status == 200
    assert [(c["docid"], c["score"]) for c in by_vector["results"]["v"]["candidates"]] == cli_run[qids[0]]
    status, body, _ = batched.request("POST", "/v1/bm25/search", {"queries": {"v": vector}})
    assert status == 422 and "texts only" in body["error"]


def test_api_key_both_headers(batched):
    path = search_path("bm25", "protein folding", hits=1)
    status, body, _ = batched.get(path, auth=False)
    assert status == 401 and "API key" in body["error"]
    assert batched.get(path, auth=False, headers={"X-API-Key": "wrong"})[0] == 401
    assert batched.get(path, auth=False, headers={"X-API-Key": KEY})[0] == 200
    assert batched.get(path, auth=False, headers={"Authorization": f"Bearer {KEY}"})[0] == 200
    assert batched.get(path, auth=False, headers={"Authorization": "Bearer nope"})[0] == 401
    assert batched.get("/health", auth=False)[0] == 200


def test_indexes_health_metrics_openapi(batched):
    status, body, _ = batched.get("/v1/indexes")
    served = {index["name"]: index for index in body["indexes"]}
    assert served["splade"]["kind"] == "impact" and served["splade"]["encoder"] == "splade-tiny"
    assert served["splade"]["documents"] == served["bm25"]["documents"] == served["splade"]["manifest"]["documents"]
    assert served["splade"]["encoder_fingerprint"] == served["splade"]["manifest"]["encoder_fingerprint"]
    assert batched.get("/ready")[0] == 200
    text = batched.get("/metrics")[1]["text"]
    for name in ("laconic_request_seconds_bucket", "laconic_queue_depth", "laconic_encode_batch_size_bucket",
                 "laconic_rejections_total"):
        assert name in text
    status, spec, _ = batched.get("/openapi.json")
    assert status == 200 and "/v1/{index}/search" in spec["paths"]


def test_limits_name_themselves(unbatched):
    status, body, _ = unbatched.get(search_path("splade", "x", hits=101))
    assert status == 400 and "--max-hits" in body["error"]
    status, body, _ = unbatched.get(search_path("splade", "y" * 301))
    assert status == 400 and "--max-query-chars" in body["error"]
    status, body, _ = unbatched.request("POST", "/v1/splade/search", {"queries": {"q": "z" * 2100}})
    assert status == 400 and "--max-body-bytes" in body["error"]
    status, body, _ = unbatched.request("POST", "/v1/splade/search", b"{not json")
    assert status == 422 and "JSON" in body["error"]
    status, body, _ = unbatched.request("POST", "/v1/splade/search", {"queries": {"q": {"t": "heavy"}}})
    assert status == 422 and "'t'" in body["error"]


def test_overload_is_refused_at_once(unbatched, topics):
    """Queue bound 4: of 24 simultaneous requests, those over the bound get 429 + Retry-After within 100 ms; every
    admitted one succeeds."""
    texts = list(topics.values())[:24]

    def one(text):
        start = time.perf_counter()
        status, body, headers = unbatched.get(search_path("splade", text, hits=100, explain="true"))
        return status, headers, time.perf_counter() - start

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, texts))
    refused = [a for a in answers if a[0] == 429]
    assert refused and all(a[0] == 200 for a in answers if a[0] != 429)
    assert all(headers.get("retry-after") == "1" and elapsed < 0.1 for _, headers, elapsed in refused), refused


def test_sigterm_finishes_requests_in_flight(splade_index, topics, tmp_path):
    server = ServerProcess(["--index", f"splade={splade_index}", "--no-mcp"], log=tmp_path / "sigterm.log")
    try:
        texts = list(topics.values())[:12]
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(server.get, search_path("splade", t, hits=100, explain="true")) for t in texts]
            # Every request admitted and none answered: the first explanation reads the stored vectors meanwhile.
            deadline = time.monotonic() + 60
            while queue_depth(server) < len(texts) and time.monotonic() < deadline:
                time.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert [a[0] for a in answers] == [200] * len(texts)
        # uvicorn re-raises the signal once every request is answered: the process ends by SIGTERM, not a kill.
        assert server.process.wait(60) in (0, -signal.SIGTERM)
    finally:
        server.terminate()


def test_failing_backend_is_503_naming_it_while_others_serve(encoded, bm25_index, tmp_path):
    """A Milvus collection whose server goes away answers 503 naming its index; BM25 beside it keeps serving."""
    from laconic_pyserini.index.milvus import export_to_milvus
    from laconic_pyserini.index.milvus_server import LocalMilvus

    milvus = LocalMilvus(tmp_path / "milvus").__enter__()
    try:
        uri = f"milvus://{milvus.address}/serve_splade"
        export_to_milvus(encoded("splade-tiny", "scifact")["encoded"], uri, batch_size=1000, progress=False)
        server = ServerProcess(["--index", f"milvus={uri}?timeout=5", "--index", f"bm25={bm25_index('scifact')}",
                                "--no-mcp", "--backend-timeout-s", "8"], log=tmp_path / "serve.log")
        try:
            status, before, _ = server.get(search_path("milvus", "aspirin and heart attacks"))
            lucene = server.get(search_path("bm25", "aspirin and heart attacks"))
            assert status == 200 and before["candidates"] and lucene[0] == 200
            milvus.stop()
            status, body, _ = server.get(search_path("milvus", "aspirin and heart attacks"))
            assert status == 503 and "'milvus'" in body["error"], body
            assert server.get(search_path("bm25", "aspirin and heart attacks"))[:2] == lucene[:2]
            assert server.get("/ready")[1]["failing"] == ["milvus"]
        finally:
            server.terminate()
    finally:
        milvus.stop()


@pytest.mark.parametrize("args, env, says", [
    (["--index", "a=/nowhere", "--host", "0.0.0.0"], {}, "needs an API key"),
    (["--index", "nameless"], {}, "expected NAME=LOCATION"),
    (["--index", "a/b=/nowhere"], {}, "an index name is"),
    (["--index", "a=/nowhere"], {"LACONIC_API_KEY_FILE": "/nowhere/key"}, "LACONIC_API_KEY_FILE=/nowhere/key"),
    (["--index", "a=/nowhere", "--queue-bound", "0"], {}, "--queue-bound 0"),
    (["--index", "a=/nowhere"], {}, "/nowhere: no such index folder"),
])
def test_bad_settings_are_one_error_line(args, env, says):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LACONIC_API_KEY")}
    done = subprocess.run([sys.executable, "-m", "laconic_pyserini.serve", *args], cwd=REPO, capture_output=True,
                          text=True, env={**clean, "PYTHONPATH": str(REPO), **env}, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
