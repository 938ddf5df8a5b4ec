"""The training curriculum: loss terms against hand computations, the FLOPS warm-up, the cross-process
gathering math with real gloo processes, resume after a crash, the trained output loading as an encoder, and
hard-negative mining with a real BM25 index of SciFact train."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from conftest import REPO, model_dir  # noqa: E402
from laconic_pyserini.train import losses  # noqa: E402
from laconic_pyserini.train.config import ConfigError, config_from_dict, load_config  # noqa: E402
from laconic_pyserini.train.data import BatchOrder, Example, Passage, batch_texts, choose_group, load_examples  # noqa: E402

PAIRS = "title_abstract_pairs.jsonl"


# ------------------------------------------------------------------------------------------------ loss terms


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    # two groups of [positive, negative]
    p = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    t = 0.5
    expected = 0.0
    for i, row in enumerate(q.tolist()):
        scores = [sum(a * b for a, b in zip(row, col)) / t for col in p.tolist()]
        positive = scores[2 * i]
        expected += -(positive - math.log(sum(math.exp(s) for s in scores)))
    expected /= 2
    got = losses.info_nce(q, p, group_size=2, temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_flops_and_nonzero_match_hand_computation():
    reps = torch.tensor([[0.0, 1.0, 2.0, 0.0], [3.0, 0.0, 1.0, 0.0], [0.0, 0.0, 3.0, 0.5]])
    columns = list(zip(*reps.tolist()))
    expected = sum((sum(c) / 3) ** 2 for c in columns)
    assert losses.flops(reps).item() == pytest.approx(expected)
    assert losses.average_nonzero(reps).item() == pytest.approx((2 + 2 + 2) / 3)


def test_total_loss_is_the_weighted_sum_of_named_terms():
    torch.manual_seed(0)
    q, p = torch.rand(3, 7), torch.rand(6, 7)
    terms = losses.laconic_loss(q, p, group_size=2, temperature=1.0, flops_query=0.3, flops_passage=0.05)
    assert set(terms) == {"loss", "info_nce", "flops_q", "flops_p", "nonzero_q", "nonzero_p"}
    assert terms["flops_q"].item() == pytest.approx(losses.flops(q).item())
    assert terms["loss"].item() == pytest.approx(
        terms["info_nce"].item() + 0.3 * terms["flops_q"].item() + 0.05 * terms["flops_p"].item(), rel=1e-6)


def test_flops_weight_warms_up_quadratically():
    values = [losses.flops_weight(step, 1e-3, 10) for step in (0, 1, 5, 9, 10, 50)]
    assert values == pytest.approx([0.0, 1e-5, 2.5e-4, 8.1e-4, 1e-3, 1e-3])
    assert losses.flops_weight(0, 5e-4, 0) == 5e-4  # no warm-up: full weight at once


def test_lr_schedule_warms_up_then_follows_a_cosine():
    from laconic_pyserini.train.loop import lr_lambda

    f = lr_lambda("cosine", 2, 10)
    assert [f(s) for s in (0, 1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.5)       # halfway through the decay
    assert f(10) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ gathering


def _gather_worker(rank: int, world: int, port: int, out_dir: str, q_all, p_all, group: int) -> None:
    import torch.distributed as dist

    from laconic_pyserini.train.distributed import gather_with_grad

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    rows = q_all.shape[0] // world
    q = q_all[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
    p = p_all[rank * rows * group:(rank + 1) * rows * group].clone().requires_grad_(True)
    terms = losses.laconic_loss(q, p, group_size=group, temperature=0.7, flops_query=0.01, flops_passage=0.02,
                                gather=gather_with_grad, rank=rank)
    terms["loss"].backward()
    torch.save({"loss": terms["loss"].detach(), "q_grad": q.grad, "p_grad": p.grad}, Path(out_dir) / f"{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_loss_and_gradients_equal_one_process_on_the_global_batch(tmp_path):
    """Two real gloo processes, each with half the queries and their passage groups: the mean of their losses is
    the one-process loss of the whole batch, and the DDP-averaged gradients (each rank's gradient / 2) are its
    gradients — negatives from the other rank included, FLOPS over the global batch."""
    import torch.multiprocessing as mp

    torch.manual_seed(1)
    world, group = 2, 3
    q_all = torch.rand(4, 11)
    p_all = torch.rand(4 * group, 11) * (torch.rand(4 * group, 11) > 0.5)
    mp.spawn(_gather_worker, args=(world, _free_port(), str(tmp_path), q_all, p_all, group), nprocs=world)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]

    q, p = q_all.clone().requires_grad_(True), p_all.clone().requires_grad_(True)
    single = losses.laconic_loss(q, p, group_size=group, temperature=0.7, flops_query=0.01, flops_passage=0.02)
    single["loss"].backward()
    assert sum(part["loss"] for part in parts).item() / world == pytest.approx(single["loss"].item(), rel=1e-5)
    q_grad = torch.cat([part["q_grad"] for part in parts]) / world
    p_grad = torch.cat([part["p_grad"] for part in parts]) / world
    torch.testing.assert_close(q_grad, q.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(p_grad, p.grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------ data


def test_training_file_layouts(tmp_path, data_root):
    pairs = load_examples(data_root / "training" / PAIRS, sources=["cranfield"], max_examples=3)
    first = json.loads(next(line for line in open(data_root / "training" / PAIRS)
                            if json.loads(line)["source"] == "cranfield"))
    assert pairs[0] == Example(first["title"], (Passage("", first["abstract"]),))
    wikiqa = load_examples(data_root / "training" / "wikiqa_train_triples.jsonl", max_examples=1, need_negatives=True)
    assert wikiqa[0].query == "how are glacier caves formed?" and len(wikiqa[0].negatives) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n{"query": "q2"}\n', encoding="utf-8")
    from laconic_pyserini.data import DataError

    with pytest.raises(DataError, match=r"bad.jsonl:2: no positive"):
        load_examples(bad)
    with pytest.raises(DataError, match=r"bad.jsonl:1: phase 2 needs negatives"):
        load_examples(bad, need_negatives=True)


def test_batch_order_covers_each_example_once_per_epoch_and_splits_ranks():
    order = BatchOrder(num_examples=10, batch_size=2, world_size=2, seed=3)
    assert order.per_epoch == 2  # 10 // 4, the incomplete tail is dropped
    seen = [i for m in range(2) for r in range(2) for i in order.indices(m, r)[1]]
    assert len(seen) == len(set(seen)) == 8
    assert order.indices(2, 0)[0] == 1 and order.indices(2, 0) == BatchOrder(10, 2, 2, 3).indices(2, 0)


def test_hard_negative_groups_are_deterministic_and_full_size():
    example = Example("q", (Passage("", "pos"),), tuple(Passage("", f"neg{i}") for i in range(3)))
    group = choose_group(example, index=5, epoch=0, negatives=5, seed=1)
    assert group[0] == Passage("", "pos") and len(group) == 6
    assert {p.text for p in group[1:]} == {"neg0", "neg1", "neg2"}  # all three, two repeated
    assert group == choose_group(example, index=5, epoch=0, negatives=5, seed=1)
    queries, passages, size = batch_texts([example], [0], 0, negatives=2, seed=1,
                                          query_text=lambda t: "query: " + t,
                                          passage_text=lambda title, text: "passage: " + text)
    assert queries == ["query: q"] and size == 3 and passages[0] == "passage: pos"


# ------------------------------------------------------------------------------------------------ configs


def test_shipped_configs_carry_the_paper_hyper_parameters():
    configs = {p.stem: load_config(p) for p in sorted((REPO / "configs").glob("*.yaml"))}
    for size in ("1b", "3b", "8b"):
        one, two = configs[f"laconic-{size}-phase1"], configs[f"laconic-{size}-phase2"]
        assert (one.train.phase, one.optim.lr, one.loss.flops_query, one.loss.flops_passage) == (1, 1e-4, 5e-4, 5e-4)
        assert (one.train.query_max_length, one.train.passage_max_length) == (64, 192)
        assert (one.optim.schedule, one.optim.warmup_ratio) == ("cosine", 0.05)
        assert (two.train.phase, two.optim.lr, two.loss.flops_query, two.data.negatives) == (2, 5e-5, 1e-3, 15)
        assert (two.train.query_max_length, two.train.passage_max_length) == (192, 192)
        assert two.model.backbone == one.train.output_dir + "/final"  # phase 2 starts from phase 1
        lora = (16, 32) if size == "8b" else (32, 64)
        assert (one.lora.r, one.lora.alpha) == (two.lora.r, two.lora.alpha) == lora
        assert set(one.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"}
    assert any(c.model.backbone == "smollm2-135m" for c in configs.values())


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown key.*learning_rate.*'optim'"):
        config_from_dict({"model": {"backbone": "x"}, "data": {"train": "t"}, "train": {"output_dir": "o"},
                          "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="model.backbone is required"):
        config_from_dict({"data": {"train": "t"}, "train": {"output_dir": "o"}})


# ------------------------------------------------------------------------------------------------ tiny Llama


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, data_root) -> Path:
    """A 2-layer random Llama with a 600-word vocabulary learnt from real SciFact/Cranfield text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    texts = []
    with open(data_root / "training" / PAIRS, encoding="utf-8") as f:
        for _, line in zip(range(200), f):
            row = json.loads(line)
            texts += [row["title"], row["abstract"]]
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts + ["query:", "passage:"], trainers.WordLevelTrainer(
        vocab_size=600, special_tokens=["[UNK]", "[PAD]", "<s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>")
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, data_root) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    with open(data_root / "training" / PAIRS, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for _, line in zip(range(48), f):
            out.write(line)
    return path


def _tiny_config(backbone: Path, train_file: Path, out: Path, **train) -> object:
    values = dict(phase=1, output_dir=str(out), batch_size=4, max_steps=4, query_max_length=12,
                  passage_max_length=24, precision="fp32", save_every=100, log_every=1, threads=1)
    values.update(train)
    return config_from_dict({"model": {"backbone": str(backbone), "name": "tiny-trained"},
                             "lora": {"r": 4, "alpha": 8},
                             "data": {"train": str(train_file)},
                             "optim": {"lr": 5e-3, "warmup_ratio": 0.25},
                             "loss": {"flops_query": 1e-2, "flops_passage": 1e-2, "flops_warmup_ratio": 0.5},
                             "train": values})


def _log(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows}


def test_resume_after_a_crash_gives_the_same_next_steps(tmp_path, tiny_llama, pairs_file):
    from laconic_pyserini.train.checkpoint import latest_checkpoint
    from laconic_pyserini.train.loop import train

    straight = tmp_path / "straight"
    train(_tiny_config(tiny_llama, pairs_file, straight))
    crashed = tmp_path / "crashed"
    config = _tiny_config(tiny_llama, pairs_file, crashed)
    assert train(config, stop_after=2) == crashed                  # "crash" after step 2 (checkpointed)
    assert latest_checkpoint(crashed).name == "step-00000002"
    assert not (crashed / "final").exists()
    train(config)                                                   # the same command again resumes
    a, b = _log(straight), _log(crashed)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for term in ("loss", "info_nce", "flops_q", "flops_p", "lr", "flops_weight_q"):
            assert a[step][term] == b[step][term], (step, term)
    from laconic_pyserini.train.state_files import load_state

    final_a = load_state(latest_checkpoint(straight) / "adapter.safetensors")
    final_b = load_state(latest_checkpoint(crashed) / "adapter.safetensors")
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert a[4]["flops_weight_q"] == pytest.approx(1e-2) and a[1]["flops_weight_q"] == 0.0


def _backbone_plus_checkpoint(config, checkpoint: Path, texts: list[str]) -> torch.Tensor:
    """Reference vectors (top 512) built apart from the saved output: the training module over the backbone, with
    a checkpoint's LoRA weights copied in."""
    from laconic_pyserini.modeling.sparse_head import keep_top_k
    from laconic_pyserini.train.checkpoint import load_weights
    from laconic_pyserini.train.model import backbone_spec, build_trainable

    rebuilt = build_trainable(backbone_spec(config.model), config.lora, query_max_length=256,
                              passage_max_length=256, center_head=config.model.center_head)
    load_weights(checkpoint, rebuilt.module)
    rebuilt.module.eval()
    with torch.no_grad():
        ids, mask = rebuilt.query_tokenizer.tokenize(texts)
        return keep_top_k(rebuilt.module.encode(ids, mask), 512)


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "adapter"])
def test_trained_output_loads_as_an_encoder_and_encodes_as_trained(tmp_path, tiny_llama, pairs_file, merge):
    """The folder training writes is an ``--encoder`` by itself: its spec keeps the LACONIC contract, and the
    merged weights (or the LoRA adapter over the backbone) give the vectors of the backbone + the trained LoRA
    weights."""
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec
    from laconic_pyserini.train.checkpoint import latest_checkpoint
    from laconic_pyserini.train.loop import train

    out = tmp_path / "run"
    config = _tiny_config(tiny_llama, pairs_file, out, merge=merge)
    final = train(config)
    assert (final / "model.safetensors").exists() == merge
    assert (final / "adapter_model.safetensors").exists() == (not merge)
    spec = load_spec(str(final))
    assert (spec.kind, spec.query_prefix, spec.passage_prefix, spec.add_special_tokens) == \
        ("decoder", "query: ", "passage: ", False)
    assert spec.name == "tiny-trained" and spec.bidirectional and spec.top_k == 512
    encoder = load_sparse_encoder(spec, dtype="fp32")
    texts = ["query: diffusion tensor imaging of white matter", "query: the effect of heat on wings"]
    from_output = encoder.encode_weights(texts)

    expected = _backbone_plus_checkpoint(config, latest_checkpoint(out), texts)
    torch.testing.assert_close(from_output, expected, rtol=1e-4, atol=1e-5)
    backbone = load_sparse_encoder(load_spec(str(tiny_llama)), dtype="fp32").encode_weights(texts)
    assert not torch.allclose(backbone, from_output)  # training changed the encoder


def test_centred_head_keeps_the_language_model_and_is_what_the_trained_encoder_loads(tmp_path, tiny_llama,
                                                                                      pairs_file):
    """``model.center_head``: the centred head gives the backbone's next-token distribution exactly, with the input
    embeddings untouched and every head row's mean removed; training over it writes an untied ``lm_head`` that
    the encoder loads, giving the vectors of the centred backbone + the trained LoRA (not of the raw backbone)."""
    from transformers import AutoModelForCausalLM

    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.modeling.head_centering import center_lm_head
    from laconic_pyserini.spec import load_spec
    from laconic_pyserini.train.checkpoint import latest_checkpoint
    from laconic_pyserini.train.loop import train

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        embeddings = model.get_input_embeddings().weight.clone()
        removed = center_lm_head(model)
        after = model(input_ids=ids).logits
    assert removed > 0 and not model.config.tie_word_embeddings
    torch.testing.assert_close(after.log_softmax(-1), before.log_softmax(-1), rtol=0, atol=1e-5)
    assert not torch.allclose(after, before)                                   # the logits did move
    assert torch.equal(model.get_input_embeddings().weight, embeddings)        # the input side did not
    assert model.get_output_embeddings().weight.mean(0).abs().max() < 1e-6

    out = tmp_path / "centred"
    config = _tiny_config(tiny_llama, pairs_file, out)
    config.model.center_head = True
    final = train(config)
    from safetensors import safe_open

    with safe_open(str(final / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" in f.keys()
    texts = ["query: diffusion tensor imaging of white matter", "query: the effect of heat on wings"]
    got = load_sparse_encoder(load_spec(str(final)), dtype="fp32").encode_weights(texts)
    torch.testing.assert_close(got, _backbone_plus_checkpoint(config, latest_checkpoint(out), texts),
                               rtol=1e-4, atol=1e-5)
    config.model.center_head = False
    assert not torch.allclose(got, _backbone_plus_checkpoint(config, latest_checkpoint(out), texts))

    adapter_only = config.to_dict()
    adapter_only["model"]["center_head"], adapter_only["train"]["merge"] = True, False
    with pytest.raises(ConfigError, match="train.merge: true"):
        config_from_dict(adapter_only)


def test_logit_offset_is_trained_and_carried_by_the_written_encoder(tmp_path, tiny_llama, pairs_file):
    """``model.logit_offset`` τ: training pools ``log1p(relu(max logit − τ))`` (fewer non-zero terms on the same first
    batch than without it), the written spec carries τ, the encoder it loads gives backbone + trained LoRA with τ,
    and a run over that output (phase 2) inherits τ unless its config sets another."""
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec
    from laconic_pyserini.train.checkpoint import latest_checkpoint
    from laconic_pyserini.train.config import ModelConfig
    from laconic_pyserini.train.loop import train
    from laconic_pyserini.train.model import backbone_spec

    texts = ["query: diffusion tensor imaging of white matter", "query: the effect of heat on wings"]
    plain = load_sparse_encoder(load_spec(str(tiny_llama)), dtype="fp32").encode_weights(texts)
    offset = float(torch.expm1(plain[plain > 0].median()))  # about half the backbone's terms drop out
    plain_run, offset_run = tmp_path / "plain", tmp_path / "offset"
    train(_tiny_config(tiny_llama, pairs_file, plain_run, max_steps=1))
    config = _tiny_config(tiny_llama, pairs_file, offset_run)
    config.model.logit_offset = offset
    final = train(config)
    first, first_plain = _log(offset_run)[1], _log(plain_run)[1]
    assert 0 < first["nonzero_q"] < first_plain["nonzero_q"] and 0 < first["nonzero_p"] < first_plain["nonzero_p"]

    spec = load_spec(str(final))
    assert spec.logit_offset == pytest.approx(offset)
    got = load_sparse_encoder(spec, dtype="fp32").encode_weights(texts)
    torch.testing.assert_close(got, _backbone_plus_checkpoint(config, latest_checkpoint(offset_run), texts),
                               rtol=1e-4, atol=1e-5)
    assert 0 < int((got > 0).sum()) < int((plain > 0).sum())
    assert backbone_spec(ModelConfig(backbone=str(final))).logit_offset == pytest.approx(offset)
    assert backbone_spec(ModelConfig(backbone=str(final), logit_offset=0.0)).logit_offset == 0.0
    with pytest.raises(ConfigError, match="model.logit_offset must be a number"):
        config_from_dict({**config.to_dict(), "model": {**config.to_dict()["model"], "logit_offset": [12.0]}})


# ------------------------------------------------------------------------------------------------ mining


def test_mining_excludes_judged_positives(tmp_path, data_root, bm25_index):
    """Real SciFact train queries against a real BM25 index: negatives are the BM25 ranking minus the judged
    positives, in rank order; positives are exactly the qrels."""
    from laconic_pyserini.topics import load_qrels, load_topics
    from laconic_pyserini.searchers import open_searcher
    from laconic_pyserini.train.mine import mine_hard_negatives

    index = bm25_index("scifact")
    out = tmp_path / "negatives.jsonl"
    stats = mine_hard_negatives(data_root / "scifact", out, index_dir=index, split="train", depth=20,
                                negatives=8, max_queries=60)
    qrels = load_qrels(data_root / "scifact", "train")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == stats.queries > 50
    assert stats.excluded_positives > 20  # BM25 finds many judged positives in its top 20: they were dropped
    topics = load_topics(data_root / "scifact", "train")
    run = open_searcher(index).batch_search({r["query_id"]: topics[r["query_id"]] for r in rows}, 20)
    for row in rows:
        judged = {d for d, g in qrels[row["query_id"]].items() if g > 0}
        assert {p["id"] for p in row["positives"]} == judged
        negative_ids = [n["id"] for n in row["negatives"]]
        assert not judged & set(negative_ids)
        assert negative_ids == [d for d, _ in run[row["query_id"]] if d not in judged][:8]
    doc = rows[0]["positives"][0]
    corpus_line = next(json.loads(line) for line in open(data_root / "scifact" / "corpus.jsonl", encoding="utf-8")
                       if json.loads(line)["_id"] == doc["id"])
    assert (doc["title"], doc["text"]) == (corpus_line["title"], corpus_line["text"])
    # The mined file is a phase-2 training file as it is.
    examples = load_examples(out, need_negatives=True)
    assert len(examples) == len(rows) and examples[0].negatives[0].text == rows[0]["negatives"][0]["text"]


# ------------------------------------------------------------------------------------------------ DDP end to end


def _ddp_worker(rank: int, world: int, port: int, config) -> None:
    from laconic_pyserini.train.loop import train

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    train(config)


def test_two_process_ddp_run_equals_one_process_on_the_global_batch(tmp_path, tiny_llama, pairs_file):
    """The real trainer under DDP with gloo, 2 processes × 2 queries, against 1 process × 4 queries: the same
    examples per step, negatives gathered across processes, FLOPS over the global batch, so the same losses and the
    same trained weights."""
    import torch.multiprocessing as mp

    from laconic_pyserini.train.checkpoint import latest_checkpoint
    from laconic_pyserini.train.loop import train

    single = tmp_path / "single"
    train(_tiny_config(tiny_llama, pairs_file, single, batch_size=4, max_steps=3))
    ddp = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), _tiny_config(tiny_llama, pairs_file, ddp, batch_size=2, max_steps=3)),
             nprocs=2)
    a, b = _log(single), _log(ddp)
    for step in (1, 2, 3):
        for term in ("loss", "info_nce", "flops_q", "flops_p"):
            assert b[step][term] == pytest.approx(a[step][term], rel=1e-4), (step, term)
    from laconic_pyserini.train.state_files import load_state

    wa = load_state(latest_checkpoint(single) / "adapter.safetensors")
    wb = load_state(latest_checkpoint(ddp) / "adapter.safetensors")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-3, atol=1e-5)
    assert (ddp / "final" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------ real GGUF backbone


@pytest.mark.slow
def test_one_step_from_the_real_smollm2_gguf_saves_a_loadable_encoder(tmp_path, pairs_file):
    """SmolLM2-135M comes as a Q4_1 GGUF, dequantized on load: the merged output must still save as safetensors
    (transformers marks GGUF-loaded models unsaveable) and load back as an encoder whose vectors are not the
    backbone's."""
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec
    from laconic_pyserini.train.loop import train

    model_dir("smollm2-135m-gguf")
    config = config_from_dict({"model": {"backbone": "smollm2-135m", "name": "smol-one-step"},
                               "lora": {"r": 2, "alpha": 4}, "data": {"train": str(pairs_file)},
                               "optim": {"lr": 1e-3},
                               "train": {"output_dir": str(tmp_path / "run"), "batch_size": 2, "max_steps": 1,
                                         "query_max_length": 8, "passage_max_length": 16, "precision": "fp32",
                                         "threads": 2}})
    final = train(config)
    spec = load_spec(str(final))
    assert spec.gguf_file is None and spec.tokenizer is None and spec.add_special_tokens is False
    assert "quantization_config" not in json.loads((final / "config.json").read_text())
    texts = ["query: heart attack risk"]
    trained = load_sparse_encoder(spec).encode_weights(texts)
    backbone = load_sparse_encoder(load_spec("smollm2-135m")).encode_weights(texts)
    assert trained.shape == backbone.shape and not torch.equal(trained, backbone)


def test_an_earlier_checkpoint_exports_as_an_encoder(tmp_path, tiny_llama, pairs_file):
    """Early stopping: ``--export-step N`` writes step N's encoder, which encodes as backbone + step N's LoRA
    weights (not the final ones); a step without a complete checkpoint is a clear error listing those there are."""
    from laconic_pyserini.modeling import load_sparse_encoder
    from laconic_pyserini.spec import load_spec
    from laconic_pyserini.train.__main__ import main
    from laconic_pyserini.train.checkpoint import step_checkpoint
    from laconic_pyserini.train.loop import export_checkpoint, train

    out = tmp_path / "run"
    config = _tiny_config(tiny_llama, pairs_file, out, save_every=2, keep_checkpoints=3)
    final = train(config)
    exported = export_checkpoint(config, 2)
    assert exported == out / "step-2-final"
    assert json.loads((exported / "training.json").read_text())["steps"] == 2
    texts = ["query: diffusion tensor imaging of white matter"]
    got = load_sparse_encoder(load_spec(str(exported)), dtype="fp32").encode_weights(texts)

    expected = _backbone_plus_checkpoint(config, step_checkpoint(out, 2), texts)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, load_sparse_encoder(load_spec(str(final)), dtype="fp32").encode_weights(texts))

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    assert main(["--config", str(config_file), "--export-step", "3"]) == 2  # only 2 and 4 were saved

    # step 0: the model training starts from, i.e. the backbone (the untrained baseline of the run)
    assert main(["--config", str(config_file), "--export-step", "0", "--export-to", str(tmp_path / "step0")]) == 0
    assert json.loads((tmp_path / "step0" / "training.json").read_text())["steps"] == 0
    step0 = load_sparse_encoder(load_spec(str(tmp_path / "step0")), dtype="fp32")
    torch.testing.assert_close(step0.encode_weights(texts),
                               load_sparse_encoder(load_spec(str(tiny_llama)), dtype="fp32").encode_weights(texts),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ probe


def test_probe_ranks_training_queries_in_a_pool_with_their_judged_documents(data_root):
    """The one-minute pilot check: real splade-tiny, real SciFact train queries. Every judged document is in the
    pool, and a real retriever is far above a random ranking (MRR@10 ≈ 0.006 for 500 documents); splade-tiny has no
    top-k cut, so impacts and full vectors rank alike. Centring needs a bias-free decoder head, said clearly."""
    from laconic_pyserini.train.probe import probe

    model_dir("splade-tiny")
    result = probe("splade-tiny", dataset=str(data_root / "scifact"), queries=60, pool=300)
    assert (result["queries"], result["pool"]) == (60, 300)
    assert result["impact"]["MRR@10"] > 0.4 and result["full"]["MRR@10"] > 0.4
    assert abs(result["impact"]["MRR@10"] - result["full"]["MRR@10"]) < 0.05
    # --logit-offset reaches the encoder: the same pool with every pooled logit lowered by 1 keeps fewer terms
    shifted = probe("splade-tiny", dataset=str(data_root / "scifact"), queries=60, pool=300, logit_offset=1.0)
    assert result["logit_offset"] == 0.0 and shifted["logit_offset"] == 1.0
    assert 0 < shifted["nonzero_doc_terms"] < result["nonzero_doc_terms"]
    with pytest.raises(ValueError, match="bias-free"):
        probe("splade-tiny", dataset=str(data_root / "scifact"), queries=5, pool=50, center_head=True)
