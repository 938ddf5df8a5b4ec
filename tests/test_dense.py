"""Dense baselines in faiss (``encode.dense``, ``searchers.faiss``) and the side-by-side comparison (``compare``).

The expensive parts run once per module: SciFact through ``compare`` (BM25 + all-MiniLM-L6-v2, whole corpus, the
run's shared encoding), and an independent reference -- sentence-transformers' own ``encode`` of the queries and of
a sample of the documents, and numpy dot products -- to check it against.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS_ROOT, REPO, model_dir

# Anserini's published BM25 (flat) on BEIR SciFact: https://github.com/castorini/anserini (regressions, beir-v1.0.0)
ANSERINI_BM25_SCIFACT_NDCG10 = 0.6789


def _beir_subset(source: Path, out: Path, *, queries: int, extra_docs: int, seed: int = 0) -> Path:
    """A small real BEIR folder: the first ``queries`` test queries, their judged documents, and random others."""
    (out / "qrels").mkdir(parents=True)
    rows = [line.rstrip("\n").split("\t") for line in open(source / "qrels" / "test.tsv", encoding="utf-8")][1:]
    qids = sorted({q for q, _, _ in rows})[:queries]
    judged = {d for q, d, _ in rows if q in qids}
    docs = [json.loads(line) for line in open(source / "corpus.jsonl", encoding="utf-8")]
    rng = random.Random(seed)
    keep = [d for d in docs if d["_id"] in judged] + rng.sample([d for d in docs if d["_id"] not in judged],
                                                                extra_docs)
    rng.shuffle(keep)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep), encoding="utf-8")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for line in open(source / "queries.jsonl", encoding="utf-8"):
            if json.loads(line)["_id"] in qids:
                f.write(line)
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in rows if q in qids)
    return out


# ------------------------------------------------------------------------------------------------ SciFact, whole


@pytest.fixture(scope="module")
def scifact_report(tmp_path_factory, data_root, encoded):
    """``compare`` on SciFact test with BM25 and all-MiniLM-L6-v2 (flat), as `make demo` runs it minus splade.

    The MiniLM index is the session's shared one (built by ``encode_dense_corpus``, what compare's own build
    calls), handed over as ``dense:INDEX_DIR``; compare checks it was built from the same corpus.
    """
    from laconic_pyserini.compare import compare

    out = tmp_path_factory.mktemp("compare") / "scifact"
    result = compare(data_root / "scifact", ["bm25", f"dense:{encoded('minilm', 'scifact')['index']}"], out)
    return out, result


#: sentence-transformers re-encodes every tenth SciFact document (518 of 5,183): the stored vectors are shown to be
#: its vectors there, and the reference run is then a numpy brute force over the stored vectors with ST's queries.
ST_SAMPLE_STEP = 10


@pytest.fixture(scope="module")
def st_reference(data_root, encoded):
    """The independent computation: SentenceTransformer.encode (BEIR's text convention) of every test query and of
    a sample of the documents, and numpy dot products for the ranking."""
    import faiss
    from sentence_transformers import SentenceTransformer

    from laconic_pyserini.topics import load_qrels, load_topics

    model = SentenceTransformer(str(model_dir("all-MiniLM-L6-v2")), device="cpu")
    docs = [json.loads(line) for line in open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8")]
    doc_ids = [d["_id"] for d in docs]
    sample = list(range(0, len(docs), ST_SAMPLE_STEP))
    sample_vectors = model.encode([(docs[i]["title"] + " " + docs[i]["text"]).strip() for i in sample],
                                  batch_size=32, convert_to_numpy=True)
    index_dir = encoded("minilm", "scifact")["index"]
    index = faiss.read_index(str(index_dir / "index"))
    stored = index.reconstruct_n(0, index.ntotal)
    assert (index_dir / "docid").read_text(encoding="utf-8").splitlines() == doc_ids
    topics = load_topics(data_root / "scifact", "test")
    qids = list(topics)
    query_vectors = model.encode([topics[q] for q in qids], batch_size=32, convert_to_numpy=True)
    scores = query_vectors @ stored.T
    run = {}
    for qid, row in zip(qids, scores):
        top = np.argsort(-row, kind="stable")[:1000]
        run[qid] = [(doc_ids[i], float(row[i])) for i in top]
    return {"doc_ids": doc_ids, "sample": sample, "sample_vectors": sample_vectors, "qids": qids,
            "query_vectors": query_vectors, "run": run, "qrels": load_qrels(data_root / "scifact", "test")}


def _row(result: dict, name: str) -> dict:
    return next(r for r in result["systems"] if r["name"] == name)


@pytest.mark.slow
def test_minilm_pipeline_equals_sentence_transformers(scifact_report, st_reference):
    from laconic_pyserini.eval import evaluate

    _, result = scifact_report
    row = _row(result, "dense:minilm")
    reference = evaluate(st_reference["qrels"], st_reference["run"])
    assert row["metrics"]["nDCG@10"] == round(reference["nDCG@10"], 4)
    assert row["metrics"]["R@100"] == round(reference["R@100"], 4)
    # Not only the metric: the stored vectors are sentence-transformers' vectors.
    import faiss

    index = faiss.read_index(str(Path(row["index"]) / "index"))
    stored = index.reconstruct_n(0, index.ntotal)
    ids = (Path(row["index"]) / "docid").read_text(encoding="utf-8").splitlines()
    assert ids == st_reference["doc_ids"]
    assert np.abs(stored[st_reference["sample"]] - st_reference["sample_vectors"]).max() < 1e-4
    assert row["metrics"]["nDCG@10"] > 0.6  # MiniLM-L6 on SciFact is ~0.645 (MTEB); a broken pooling gives far less


@pytest.mark.slow
def test_bm25_row_is_anserinis_published_number(scifact_report):
    _, result = scifact_report
    assert _row(result, "bm25")["metrics"]["nDCG@10"] == ANSERINI_BM25_SCIFACT_NDCG10


@pytest.mark.slow
def test_report_files(scifact_report):
    out, result = scifact_report
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["dataset"].endswith("scifact") and saved["split"] == "test"
    for row in saved["systems"]:
        assert row["kind"] in ("bm25", "sparse", "dense")
        assert set(row["metrics"]) == {"nDCG@10", "R@100", "R@1000"}
        assert row["index_bytes"] == sum(p.stat().st_size for p in Path(row["index"]).rglob("*") if p.is_file())
        assert row["serving_rss_bytes"] >= row["process_base_rss_bytes"] > 0
        assert row["encode_docs_per_s"] > 0
        latency = row["query_latency_ms"]
        assert latency["total_p95"] >= latency["search_p50"] > 0
    dense = _row(saved, "dense:minilm")
    # A flat float32 index is the vectors: 5,183 × 384 × 4 bytes, plus faiss' small header and the docid file.
    vectors_bytes = 5183 * 384 * 4
    assert vectors_bytes < dense["index_bytes"] < vectors_bytes * 1.02
    assert dense["query_latency_ms"]["encode_p50"] > 0
    assert _row(saved, "bm25")["query_latency_ms"]["encode_p50"] == 0  # Lucene analyses inside search
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| System | nDCG@10 |" in markdown
    assert f"| bm25 | {ANSERINI_BM25_SCIFACT_NDCG10:.4f} |" in markdown
    assert f"| dense:minilm | {dense['metrics']['nDCG@10']:.4f} |" in markdown
    import matplotlib.image

    image = matplotlib.image.imread(out / "report.png")
    assert image.shape[0] > 400 and image.shape[1] > 1200
    rgb = image[..., :3]
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2  # the system markers (gray BM25 excluded)
    assert coloured.sum() > 200


@pytest.mark.slow
def test_search_cli_over_faiss_index(scifact_report, tmp_path, data_root):
    from laconic_pyserini import search
    from laconic_pyserini.eval import evaluate_run_file
    from laconic_pyserini.run import read_trec_run

    _, result = scifact_report
    row = _row(result, "dense:minilm")
    run_path = tmp_path / "run.trec"
    assert search.main(["--index", row["index"], "--topics", str(data_root / "scifact"), "--output", str(run_path),
                        "--backend", "faiss", "--hits", "100", "--threads", "2"]) == 0
    scores = evaluate_run_file(data_root / "scifact", run_path)
    assert round(scores["nDCG@10"], 4) == row["metrics"]["nDCG@10"]  # batched search == one-at-a-time serving
    # --remove-query: a topic whose id is a document's id and whose text is that document's title finds it first.
    doc_id = "4983"
    title = next(json.loads(line)["title"] for line in open(data_root / "scifact" / "corpus.jsonl")
                 if json.loads(line)["_id"] == doc_id)
    topics = tmp_path / "self.tsv"
    topics.write_text(f"{doc_id}\t{title}\n", encoding="utf-8")
    for flag, expected_first in (([], True), (["--remove-query"], False)):
        out = tmp_path / f"self{len(flag)}.trec"
        assert search.main(["--index", row["index"], "--topics", str(topics), "--output", str(out),
                            "--hits", "10"] + flag) == 0
        hits = read_trec_run(out)[doc_id]
        assert len(hits) == 10
        assert (hits[0][0] == doc_id) is expected_first
        assert any(d == doc_id for d, _ in hits) is expected_first


@pytest.mark.slow
def test_pyserini_faiss_searcher_reads_our_folder(scifact_report, st_reference):
    from laconic_pyserini import jvm

    _, result = scifact_report
    index_dir = _row(result, "dense:minilm")["index"]
    jvm.start()
    from pyserini.search.faiss import FaissSearcher as PyseriniFaissSearcher

    from laconic_pyserini.searchers.faiss import FaissSearcher

    queries = st_reference["query_vectors"][:20]
    qids = st_reference["qids"][:20]
    theirs = PyseriniFaissSearcher(index_dir, query_encoder=object()).batch_search(queries, qids, k=10)
    ours = FaissSearcher(index_dir).search_vectors(queries, 10)
    for qid, hits in zip(qids, ours):
        assert [h.docid for h in theirs[qid]] == [d for d, _ in hits]
        assert np.allclose([h.score for h in theirs[qid]], [s for _, s in hits], atol=1e-5)


@pytest.mark.slow
def test_hnsw_recall_against_flat(scifact_report, tmp_path, st_reference):
    from laconic_pyserini.index.faiss import rebuild_faiss_index
    from laconic_pyserini.searchers.faiss import FaissSearcher

    _, result = scifact_report
    flat_dir = _row(result, "dense:minilm")["index"]
    hnsw_dir = rebuild_faiss_index(flat_dir, tmp_path / "hnsw", "hnsw")
    manifest = json.loads((hnsw_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["index_type"] == "hnsw" and manifest["hnsw"]["M"] == 32
    queries = st_reference["query_vectors"]
    flat = FaissSearcher(flat_dir).search_vectors(queries, 10)
    hnsw = FaissSearcher(hnsw_dir).search_vectors(queries, 10)
    recall = np.mean([len({d for d, _ in a} & {d for d, _ in b}) / 10 for a, b in zip(flat, hnsw)])
    assert recall >= 0.95, recall
    low = FaissSearcher(hnsw_dir, ef_search=10).search_vectors(queries, 10)
    assert np.mean([len({d for d, _ in a} & {d for d, _ in b}) / 10 for a, b in zip(flat, low)]) <= recall


# ------------------------------------------------------------------------------------------------ small corpus


@pytest.fixture(scope="module")
def mini(tmp_path_factory, data_root):
    return _beir_subset(data_root / "scifact", tmp_path_factory.mktemp("mini") / "scifact-mini", queries=20,
                        extra_docs=80)


@pytest.mark.slow
def test_compare_all_three_kinds_and_reuse(mini, tmp_path, data_root):
    """BM25, splade-tiny (Lucene impact) and MiniLM (flat + HNSW) side by side; the second call reuses."""
    from laconic_pyserini import search
    from laconic_pyserini.compare import build_system, compare, parse_system
    from laconic_pyserini.eval import evaluate_run_file

    model_dir("splade-tiny")
    systems = ["bm25", "sparse:splade-tiny", "dense:minilm", "dense-hnsw:minilm"]
    result = compare(mini, systems, tmp_path / "out")
    assert [r["name"] for r in result["systems"]] == ["bm25", "sparse:splade-tiny", "dense:minilm",
                                                      "dense-hnsw:minilm"]
    sparse = _row(result, "sparse:splade-tiny")
    assert sparse["avg_doc_terms"] > 20 and sparse["avg_query_terms"] > 5
    # The one-query-at-a-time serving path gives the metrics the batched search CLI gives.
    run_path = tmp_path / "sparse.trec"
    assert search.main(["--index", sparse["index"], "--topics", str(mini), "--output", str(run_path)]) == 0
    assert round(evaluate_run_file(mini, run_path)["nDCG@10"], 4) == sparse["metrics"]["nDCG@10"]
    [ratio] = result["comparisons"][:1]
    assert ratio["sparse"] == "sparse:splade-tiny" and ratio["same_backbone"] is False
    assert ratio["index_bytes_ratio"] == round(sparse["index_bytes"] / _row(result, "dense:minilm")["index_bytes"], 4)
    # HNSW was built from the flat vectors, not re-encoded: same encoding time, (nearly) the same effectiveness.
    flat, hnsw = _row(result, "dense:minilm"), _row(result, "dense-hnsw:minilm")
    assert hnsw["encode_docs_per_s"] == flat["encode_docs_per_s"]
    assert abs(hnsw["metrics"]["nDCG@10"] - flat["metrics"]["nDCG@10"]) < 0.01
    # Reuse is keyed by what was built (system, spec, corpus): asking again builds nothing.
    records = sorted((tmp_path / "out" / "systems").glob("*/build.json"))
    assert len(records) == 4
    # Nothing rewritten (neither a build record nor an index manifest) is what "built nothing" means; a clock
    # would only measure the machine's load.
    watched = records + sorted((tmp_path / "out" / "systems").glob("*/index/manifest.json"))
    before = {p: p.stat().st_mtime_ns for p in watched}
    again = [build_system(parse_system(s), mini, tmp_path / "out" / "systems") for s in systems]
    assert {p: p.stat().st_mtime_ns for p in watched} == before and len(watched) == 8
    assert [r["index"] for r in again] == [r["index"] for r in result["systems"]]
    # An index built elsewhere is named by its manifest and used as is; a wrong kind or corpus is refused.
    from laconic_pyserini.index.manifest import IndexFolderError
    from laconic_pyserini.spec import SpecError

    adopted = parse_system(f"dense:{flat['index']}")
    assert (adopted.name, adopted.kind, adopted.index_type) == ("dense:minilm", "dense", "flat")
    record = build_system(adopted, mini, tmp_path / "elsewhere")
    assert Path(record["index"]).resolve() == Path(flat["index"]).resolve() and record["dimension"] == 384
    with pytest.raises(SpecError, match="not 'impact'"):
        parse_system(f"sparse:{flat['index']}")
    with pytest.raises(IndexFolderError, match="not the dataset's"):
        build_system(adopted, data_root / "nfcorpus", tmp_path / "elsewhere")


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_index(mini, tmp_path):
    from laconic_pyserini.encode.dense import encode_dense_corpus

    command = [sys.executable, "-m", "laconic_pyserini.encode.dense", "--corpus", str(mini), "--encoder", "minilm",
               "--output", str(tmp_path / "killed"), "--chunk-size", "32", "--batch-size", "16"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # The test hook exits with os._exit right after the second committed chunk: what kill -9 leaves, at a known
    # point instead of a timing race.
    killed = subprocess.run(command, cwd=REPO, env=dict(env, LACONIC_TEST_STOP_AFTER_PARTS="2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert killed.returncode == 137, killed.stderr[-2000:]
    aside = tmp_path / ".laconic-tmp-killed"
    chunks = sorted(p.name for p in (aside / ".laconic-tmp-chunks").iterdir())
    assert chunks == ["chunk-00000.npz", "chunk-00001.npz"]
    assert not (tmp_path / "killed").exists()  # no half index under the final name
    assert (tmp_path / ".laconic-tmp-killed.lock").exists()  # the dead run's lock, taken over by the rerun
    # Written as a run before the spec gained logit_offset would have: the same encoder, so it still resumes.
    state_file = aside / ".laconic-tmp-state.json"
    older = json.loads(state_file.read_text())
    del older["spec"]["logit_offset"]
    state_file.write_text(json.dumps(older))
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming: 2 of " in resumed.stderr  # committed chunks were read back, not encoded again
    assert not aside.exists() and not (tmp_path / ".laconic-tmp-killed.lock").exists()
    reference = encode_dense_corpus(mini, "minilm", tmp_path / "whole", chunk_size=32, batch_size=16)
    import faiss

    resumed_index = faiss.read_index(str(tmp_path / "killed" / "index"))
    whole = faiss.read_index(str(reference / "index"))
    assert (tmp_path / "killed" / "docid").read_text() == (reference / "docid").read_text()
    documents = sum(1 for _ in open(mini / "corpus.jsonl", encoding="utf-8"))
    assert resumed_index.ntotal == whole.ntotal == documents
    assert np.allclose(resumed_index.reconstruct_n(0, resumed_index.ntotal), whole.reconstruct_n(0, whole.ntotal),
                       atol=1e-6)
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["kind"] == "faiss" and manifest["documents"] == documents and manifest["spec"]["name"] == "minilm"


def test_wrong_encoders_are_refused(mini, tmp_path):
    from laconic_pyserini.compare import parse_system
    from laconic_pyserini.encode.dense import encode_dense_corpus
    from laconic_pyserini.spec import SpecError

    with pytest.raises(SpecError, match="sparse"):
        encode_dense_corpus(mini, "splade-tiny", tmp_path / "x")
    with pytest.raises(SpecError, match="dense:"):
        parse_system("sparse:minilm")
    with pytest.raises(SpecError, match="start with one of"):
        parse_system("colbert:minilm")
    assert not (tmp_path / "x").exists() and not (tmp_path / ".laconic-tmp-x").exists()


# ------------------------------------------------------------------------------------------------ decoder backbone


LLAMA3_TOKENIZER = MODELS_ROOT / "llama3-tokenizer"
TEXTS = ["Aspirin lowers the risk of a second heart attack.",
         "Microstructural development of human newborn cerebral white matter",
         "short"]


@pytest.fixture(scope="module")
def tiny_llama_dense(tmp_path_factory):
    """A random Llama (real Llama-3 vocabulary) saved as safetensors: the decoder-dense path without 1B weights."""
    import torch
    import transformers

    model_dir("llama3-tokenizer")
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    torch.manual_seed(7)
    config = transformers.LlamaConfig(vocab_size=128_256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                      tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001)
    transformers.LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _naive_dense(folder: Path, texts: list[str], prefix: str, pooling: str, *, bidirectional: bool) -> np.ndarray:
    """One text at a time, no padding; bidirectional through an explicit all-visible 4D mask (not our switch)."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(LLAMA3_TOKENIZER)
    model = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").model.eval()
    out = []
    for text in texts:
        ids = torch.tensor([tokenizer(prefix + text, add_special_tokens=False)["input_ids"]])
        mask = torch.zeros(1, 1, ids.shape[1], ids.shape[1]) if bidirectional else None
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        pooled = hidden.mean(0) if pooling == "mean" else hidden[-1]
        out.append((pooled / pooled.norm()).numpy())
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_decoder_dense_equals_naive_bidirectional_reference(tiny_llama_dense, pooling):
    from laconic_pyserini.modeling.dense import DenseEncoder
    from laconic_pyserini.spec import EncoderSpec

    spec = EncoderSpec(name="tiny-dense", model=str(tiny_llama_dense), kind="dense", tokenizer=str(LLAMA3_TOKENIZER),
                       query_prefix="query: ", passage_prefix="passage: ", add_special_tokens=False,
                       pooling=pooling, activation="none", normalize=True, bidirectional=True)
    encoder = DenseEncoder(spec, batch_size=3, dtype="fp32")  # compared with an fp32 reference
    fed = []
    encoder.model.get_input_embeddings().register_forward_pre_hook(lambda m, args: fed.append(args[0]))
    docs = encoder.encode_documents([("", t) for t in TEXTS])  # padded batch, right padding
    queries = encoder.encode_queries(TEXTS[:2])
    assert np.allclose(docs, _naive_dense(tiny_llama_dense, TEXTS, "passage: ", pooling, bidirectional=True),
                       atol=1e-5)
    assert np.allclose(queries, _naive_dense(tiny_llama_dense, TEXTS[:2], "query: ", pooling, bidirectional=True),
                       atol=1e-5)
    causal = _naive_dense(tiny_llama_dense, TEXTS, "passage: ", pooling, bidirectional=False)
    assert not np.allclose(docs, causal, atol=1e-3)  # the bidirectional switch is on, not a no-op
    special = set(encoder.tokenizer.all_special_ids) - {encoder.tokenizer.pad_token_id}
    real = torch_cat_unpadded(fed, encoder)
    assert special.isdisjoint(real) and 128000 not in real  # no BOS, no special token
    assert docs.shape == (3, 32)


def torch_cat_unpadded(fed, encoder) -> set[int]:
    # Padding positions carry the pad id but are masked; every other id must be a plain vocabulary token.
    ids = set()
    for batch in fed:
        for row in batch.tolist():
            ids.update(row)
    ids.discard(encoder.tokenizer.pad_token_id)
    return ids
