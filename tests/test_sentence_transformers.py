"""sentence-transformers' SparseEncoder both ways: our encoders exported as SparseEncoder folders give our vectors
term for term, SparseEncoder folders load as ``--encoder``, and ST's own evaluator agrees with our Lucene run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_same_impacts, model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEXTS = [
    "Heart attack symptoms include chest pain and shortness of breath.",
    "0-dimensional biomaterials show inductive properties.",
    "A short one",
    "<|begin_of_text|>a literal BOS string must stay text, not become the BOS id",
    "",
]


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)


def test_importing_the_package_and_the_integration_imports_no_torch():
    done = _python("import sys, laconic_pyserini, laconic_pyserini.integrations, laconic_pyserini.st_folder, "
                   "laconic_pyserini.export; print(sorted(m for m in ('torch', 'sentence_transformers', "
                   "'transformers') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------------- helpers


def _st_vectors(model, texts, *, document: bool = False, **kwargs) -> list[dict[str, float]]:
    """``SparseEncoder`` vectors as ``{term: weight}`` through ST's own ``decode`` (its tokenizer's strings)."""
    encode = model.encode_document if document else model.encode_query
    return [dict(pairs) for pairs in model.decode(encode(texts, convert_to_tensor=True, **kwargs))]


def _st_documents(model, texts, **kwargs):
    return _st_vectors(model, texts, document=True, **kwargs)


def _assert_same_vectors(got: list[dict], expected: list[dict], rel: float = 0.0) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert set(g) == set(e)
        assert all(g[t] == pytest.approx(e[t], rel=rel, abs=rel) for t in e), \
            max(abs(g[t] - e[t]) for t in e)


def _export(encoder: str, output: Path, tokenizer: str | None = None) -> Path:
    from laconic_pyserini.export import main as export_main

    argv = ["sentence-transformers", "--encoder", encoder, "--output", str(output)]
    assert export_main(argv + (["--tokenizer", tokenizer] if tokenizer else [])) == 0
    return output


# -------------------------------------------------------------------------------------------- LACONIC decoders


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> dict:
    """A random Llama with the real Llama-3 tokenizer (128,256 tokens), and its SparseEncoder export."""
    import torch
    import transformers

    tokenizer = model_dir("llama3-tokenizer")
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    config = transformers.AutoConfig.for_model(
        "llama", vocab_size=128_256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(1234)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # spreads the logits so that the top-512 cut is well separated
        model.get_output_embeddings().weight.normal_(0.0, 1.0)
    model.save_pretrained(folder, safe_serialization=True)
    exported = _export(str(folder), folder.parent / "tiny-llama-st", tokenizer=str(tokenizer))
    return {"model": folder, "tokenizer": tokenizer, "st": exported}


def test_tiny_llama_sparse_encoder_equals_ours_term_for_term(tiny_llama):
    from sentence_transformers import SparseEncoder

    from laconic_pyserini.integrations import open_sparse_encoder
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    # fp32 on both sides: the ST module loads in fp32 unless told otherwise, ours would pick bf16 on a bf16 CPU.
    ours = load_sparse_encoder(load_spec(str(tiny_llama["model"]), tokenizer=str(tiny_llama["tokenizer"])),
                               dtype="fp32")
    st = open_sparse_encoder(tiny_llama["st"])
    assert type(st) is SparseEncoder  # sentence-transformers' own class, built from our modules, no flag
    assert st.prompts["query"] == "query: " and st.prompts["document"] == "passage: " and st.max_active_dims == 512
    _assert_same_vectors(_st_vectors(st, TEXTS), ours.encode_queries(TEXTS))
    _assert_same_vectors(_st_documents(st, TEXTS), ours.encode_documents(TEXTS))
    # Quora / CQADupStack: documents take the query prompt.
    _assert_same_vectors(_st_documents(st, TEXTS, prompt_name="query"), ours.encode_documents(TEXTS, as_query=True))
    # decode gives the raw tokenizer strings; the top-512 cut holds; no special token was fed to the model.
    heart = dict(st.decode(st.encode_document(TEXTS[:1], convert_to_tensor=True))[0])
    assert len(heart) == 512 and any(term.startswith("Ġ") for term in heart)
    ids = st.preprocess(TEXTS[3:4], prompt="passage: ")["input_ids"][0].tolist()
    assert not set(ids) & ours.tokenization.special_ids and ids == ours.tokenize(["passage: " + TEXTS[3]])[0][0].tolist()
    # ST's own save of the loaded model reopens to the same vectors (weights and tokenizer copied along).
    st.save(str(tiny_llama["st"].parent / "resaved"), create_model_card=False)
    again = open_sparse_encoder(tiny_llama["st"].parent / "resaved")
    _assert_same_vectors(_st_documents(again, TEXTS), ours.encode_documents(TEXTS))


def test_sentence_transformers_6_asks_for_its_flag_so_open_sparse_encoder_imports_only_known_classes(tiny_llama,
                                                                                                    tmp_path):
    import shutil

    from sentence_transformers import SparseEncoder

    from laconic_pyserini.integrations import open_sparse_encoder
    from laconic_pyserini.integrations.st_load import OpenError

    # ST >= 6.0 imports a modules.json class outside its namespace only with its remote-code flag (the reason
    # is in integrations/st_load.py); pinned here so that the day ST lifts it, the docs are revisited.
    with pytest.raises(ValueError, match="laconic_pyserini.integrations.sentence_transformers.LaconicTransformer"):
        SparseEncoder(str(tiny_llama["st"]))
    modules = json.loads((tiny_llama["st"] / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["LaconicTransformer", "LaconicPooling"]
    assert not list(tiny_llama["st"].glob("*.py")) and not list(tiny_llama["st"].glob("*.bin"))
    # open_sparse_encoder imports nothing a file names: a foreign module type is refused, naming the file.
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_llama["st"], foreign)
    modules[1]["type"] = "os.system"
    (foreign / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(OpenError, match=r"foreign/modules.json: module type 'os.system'"):
        open_sparse_encoder(foreign)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpenError, match=r"empty: no modules.json; export the encoder with"):
        open_sparse_encoder(tmp_path / "empty")


def test_open_sparse_encoder_validates_numbers_and_paths_as_the_encoder_path_does(tiny_llama, tmp_path):
    """One validator: a NaN logit_offset or a module path out of the folder is refused by open_sparse_encoder with
    the very error --encoder gives, before any weight loads."""
    import shutil

    from laconic_pyserini.integrations import open_sparse_encoder
    from laconic_pyserini.spec import SpecError, load_spec

    nan = tmp_path / "nan"
    shutil.copytree(tiny_llama["st"], nan)
    modules = json.loads((nan / "modules.json").read_text())
    pooling = nan / modules[1]["path"] / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "logit_offset": float("nan")}))
    for opener in (open_sparse_encoder, lambda folder: load_spec(str(folder))):
        with pytest.raises(SpecError, match="logit_offset must be a finite number, not nan"):
            opener(nan)
    outside = tmp_path / "outside"
    shutil.copytree(tiny_llama["st"], outside)
    modules[1]["path"] = "../nan/" + modules[1]["path"]
    (outside / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(SpecError, match="module path '../nan/.*' must be a folder inside"):
        open_sparse_encoder(outside)


def test_laconic_folder_loads_back_as_encoder(tiny_llama):
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    original = load_spec(str(tiny_llama["model"]), tokenizer=str(tiny_llama["tokenizer"]))
    spec = load_spec(str(tiny_llama["st"]))
    assert spec.model == str(tiny_llama["st"]) and spec.tokenizer is None  # weights and tokenizer were copied
    same = {f: getattr(original, f) for f in ("name", "kind", "query_prefix", "passage_prefix", "add_special_tokens",
                                              "max_length", "pooling", "activation", "logit_offset", "top_k",
                                              "quant_scale", "bidirectional")}
    assert {f: getattr(spec, f) for f in same} == same
    _assert_same_vectors(load_sparse_encoder(spec).encode_documents(TEXTS),
                         load_sparse_encoder(original).encode_documents(TEXTS))


def test_smollm2_sparse_encoder_equals_ours_term_for_term(tmp_path):
    from laconic_pyserini.integrations import open_sparse_encoder
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    model_dir("smollm2-135m-gguf")
    exported = _export("smollm2-135m", tmp_path / "smollm2-st")
    # A hub id stays a reference: the folder holds no weights, our loader finds $LACONIC_MODELS or the hub.
    assert not list(exported.glob("*.safetensors")) and not list(exported.glob("*.gguf"))
    spec = load_spec(str(exported))
    assert load_spec("smollm2-135m").mismatch(spec) is None  # the same encoder: an index of either serves both
    ours = load_sparse_encoder(load_spec("smollm2-135m"), dtype="fp32")  # as the ST module loads it
    st = open_sparse_encoder(exported)
    _assert_same_vectors(_st_vectors(st, TEXTS[:3]), ours.encode_queries(TEXTS[:3]))
    _assert_same_vectors(_st_documents(st, TEXTS[:3]), ours.encode_documents(TEXTS[:3]))


# -------------------------------------------------------------------------------------------- SPLADE


@pytest.fixture(scope="module")
def splade_tiny_st(tmp_path_factory) -> Path:
    """splade-tiny exported as a standard SPLADE SparseEncoder folder (ST's Transformer + SpladePooling)."""
    model_dir("splade-tiny")
    return _export("splade-tiny", tmp_path_factory.mktemp("st") / "splade-tiny-st")


def _scifact_sample(data_root: Path, n: int = 48) -> list[str]:
    from laconic_pyserini.data import iter_corpus

    docs = []
    for doc in iter_corpus(data_root / "scifact"):
        docs.append(doc.contents)
        if len(docs) == n:
            return docs
    return docs


def test_splade_folder_is_plain_sentence_transformers_and_loads_back(splade_tiny_st, data_root):
    from sentence_transformers import SparseEncoder

    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec

    modules = json.loads((splade_tiny_st / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    reference = load_spec("splade-tiny")
    spec = load_spec(str(splade_tiny_st))
    assert spec.name == "splade-tiny-st" and spec.kind == "mlm"
    assert reference.mismatch(spec) == "encoder 'splade-tiny' vs 'splade-tiny-st'"  # only the name differs
    docs = _scifact_sample(data_root)
    ours = load_sparse_encoder(reference).encode_documents(docs)
    _assert_same_vectors(load_sparse_encoder(spec).encode_documents(docs), ours)
    # ST's own SPLADE modules (full logits, its own masking and log1p(relu)) with no argument: an independent
    # implementation; the same terms, weights equal to float32 rounding.
    st = SparseEncoder(str(splade_tiny_st), device="cpu")
    assert st.max_seq_length == 256
    _assert_same_vectors(_st_documents(st, docs), ours, rel=1e-5)
    # open_sparse_encoder hands a folder of sentence-transformers' own modules to SparseEncoder itself.
    from laconic_pyserini.integrations import open_sparse_encoder

    _assert_same_vectors(_st_documents(open_sparse_encoder(splade_tiny_st), docs[:4]), _st_documents(st, docs[:4]))


def test_unsupported_sparse_encoder_folders_are_refused(splade_tiny_st, tmp_path):
    import shutil

    from laconic_pyserini.spec import SpecError, load_spec

    folder = tmp_path / "sum-pooled"
    shutil.copytree(splade_tiny_st, folder)
    pooling = folder / "1_SpladePooling" / "config.json"
    for key, value, message in (("pooling_strategy", "sum", "pooling_strategy 'sum' is not implemented"),
                                ("activation_function", "log1p_relu", "log1p applied twice")):
        config = json.loads(pooling.read_text())
        pooling.write_text(json.dumps(dict(config, **{key: value})))
        with pytest.raises(SpecError, match=message):
            load_spec(str(folder))
        pooling.write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.sparse_encoder.modules.SparseAutoEncoder"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(SpecError, match=r"modules \['Transformer', 'SparseAutoEncoder'\]"):
        load_spec(str(folder))


def test_export_refuses_a_folder_it_did_not_write_and_redoes_its_own(splade_tiny_st, tmp_path, capsys):
    from laconic_pyserini.export import main as export_main

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert export_main(["sentence-transformers", "--encoder", "splade-tiny", "--output", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {foreign}") and "not an output of this toolkit" in err and "--output" in err
    assert err.count("\n") == 1
    assert (foreign / "notes.txt").read_text() == "mine"
    assert export_main(["sentence-transformers", "--encoder", "minilm", "--output", str(tmp_path / "d")]) == 2
    assert "is dense" in capsys.readouterr().err
    before = json.loads((splade_tiny_st / "laconic_export.json").read_text())
    _export("splade-tiny", splade_tiny_st)  # its own earlier output: rebuilt and swapped in
    assert json.loads((splade_tiny_st / "laconic_export.json").read_text()) == before
    assert not [p for p in splade_tiny_st.parent.iterdir() if p.name.startswith(".")]


# -------------------------------------------------------------------------------------------- SciFact


def _lucene_ndcg(index: Path, encoder, data_root: Path, remove_query: bool = True) -> float:
    from laconic_pyserini.topics import load_qrels, load_topics
    from laconic_pyserini.eval import evaluate
    from laconic_pyserini.search import search_topics
    from laconic_pyserini.searchers.impact import LaconicSearcher

    searcher = LaconicSearcher(index, encoder)
    run = search_topics(searcher, load_topics(data_root / "scifact", "test"), hits=1000,
                        remove_query=remove_query, threads=2)
    return evaluate(load_qrels(data_root / "scifact", "test"), run, ["nDCG@10"])["nDCG@10"]


@pytest.mark.slow
def test_scifact_through_the_st_folder_as_encoder_gives_the_same_run(splade_tiny_st, encoded, data_root, tmp_path):
    """The whole corpus encoded through ``--encoder <ST folder>``: the same impacts as splade-tiny, the same nDCG."""
    from laconic_pyserini.encode import encode_corpus, iter_vectors
    from laconic_pyserini.index.impact import build_impact_index

    reference = encoded("splade-tiny", "scifact")
    reference_ndcg = _lucene_ndcg(reference["index"], None, data_root)
    assert reference_ndcg == pytest.approx(0.6436, abs=0.0005)
    encode_corpus(data_root / "scifact", tmp_path / "encoded", str(splade_tiny_st), batch_size=32, progress=False)
    assert_same_impacts(dict(iter_vectors(tmp_path / "encoded")), dict(iter_vectors(reference["encoded"])))
    index = build_impact_index(tmp_path / "encoded", tmp_path / "index", threads=2)
    # Equal where BLAS rounds alike (AVX-512 here); a flipped impact may move a hit (AVX2): 3 decimals.
    assert _lucene_ndcg(index, str(splade_tiny_st), data_root) == pytest.approx(reference_ndcg, abs=5e-4)


#: The ST evaluator's corpus: every judged document of a SciFact test query and every fourth other one (about a
#: third of SciFact; ST's own encoder is the cost of this test).
ST_EVALUATOR_STEP = 4


@pytest.mark.slow
def test_st_evaluator_on_scifact_agrees_with_our_lucene_run(splade_tiny_st, encoded, data_root):
    """ST's SparseInformationRetrievalEvaluator (its own SPLADE modules, float dot products, no self-hit removal)
    against our Lucene run (integer impacts rint(100 w), --remove-query), on the same part of SciFact: nDCG@10
    equal to 3 decimals. Impact scores do not depend on the other documents (no idf), so our run over that part is
    the whole index's run with the other documents left out."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

    from laconic_pyserini.data import iter_corpus
    from laconic_pyserini.eval import evaluate
    from laconic_pyserini.search import search_topics
    from laconic_pyserini.searchers.impact import LaconicSearcher
    from laconic_pyserini.topics import load_qrels, load_topics

    queries = load_topics(data_root / "scifact", "test")
    qrels = load_qrels(data_root / "scifact", "test")
    judged = {d for docs in qrels.values() for d in docs}
    corpus = {doc.id: doc.contents for i, doc in enumerate(iter_corpus(data_root / "scifact"))
              if doc.id in judged or i % ST_EVALUATOR_STEP == 0}
    relevant = {qid: {d for d, rel in docs.items() if rel > 0} for qid, docs in qrels.items()}
    evaluator = SparseInformationRetrievalEvaluator(queries, corpus, relevant, name="scifact", write_csv=False,
                                                    batch_size=32)
    st = SparseEncoder(str(splade_tiny_st), device="cpu")
    st_ndcg = evaluator(st)["scifact_dot_ndcg@10"]
    run = search_topics(LaconicSearcher(encoded("splade-tiny", "scifact")["index"]), queries, hits=1000,
                        remove_query=True, threads=2)
    part = {qid: [(d, score) for d, score in hits if d in corpus] for qid, hits in run.items()}
    assert all(len(hits) >= 100 for hits in part.values())  # far more than the 10 that nDCG@10 reads
    lucene = evaluate(qrels, part, ["nDCG@10"])["nDCG@10"]
    print("ST evaluator", st_ndcg, "Lucene", lucene, "documents", len(corpus))
    # No SciFact test query id is a document id, so self-hit removal changes nothing here; what remains is float
    # dot products against integer impacts (and how ties are broken).
    assert not set(queries) & set(corpus)
    assert round(st_ndcg, 3) == round(lucene, 3)
