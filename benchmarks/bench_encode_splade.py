"""SPLADE document encoding throughput: ``laconic_pyserini.encode`` vs pyserini 1.6.0's own SPLADE encoder.

Same model folder (splade-tiny), same SciFact documents (the first ``--docs``), batch size 32, max length 256.
Rows: ours as a user gets it (``screen="auto"``: the kernels this CPU runs fast, laconic_pyserini.modeling.cpu),
ours with the bf16 screen forced, with the int8 screen forced, with the exact fp32 head forced (``screen=False``:
real tokens, cache-sized vocabulary blocks),
ours with the B×L×V chunked fp32 head (the head before the vocabulary-blocked ones), and pyserini. Every row of ours must write
byte-identical part files (checked). The CPU model, torch capability, flags and the bf16 decision are printed at
the start and recorded in the JSON (``cpu``). Ours is timed end to end (read, length-sort, encode, quantise,
write parts and manifest); pyserini's
``SpladeDocumentEncoder.encode`` only encodes (its writer is not included). Both load their model before the clock
starts. Wall time and this process's CPU time are reported (the machine is shared; CPU time is less sensitive to
other processes), with the FLOPs each document costs and the fraction of the 2-core matmul limit reached.

    .venv/bin/python benchmarks/bench_encode_splade.py [--docs 320] [--rounds 1] [--json OUT]
    # an AVX2-only CPU, emulated on an AVX-512 one (torch's kernels, oneDNN and MKL all held to AVX2):
    MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/bench_encode_splade.py ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MATMUL_LIMIT = 180e9  # fp32 FLOP/s of this machine's 2 cores (the figure)
MATMUL_LIMIT_BF16 = 410e9  # bf16 FLOP/s of the same (the figure)


def flops_per_token(config, length: int) -> float:
    """Dense FLOPs of one token of a BERT MLM in a sequence of ``length`` tokens (2 per multiply-add)."""
    h, inter, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    per_layer = 2 * (4 * h * h + 2 * h * inter) + 4 * length * h  # projections + QK^T and AV
    head = 2 * h * h + 2 * h * vocab  # MLM transform + vocabulary projection
    return layers * per_layer + head


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (ours, pyserini)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()

    from laconic_pyserini import jvm

    jvm.start()  # pyserini must not start its own JVM
    import torch
    from pyserini.encode import SpladeDocumentEncoder

    from laconic_pyserini.data import iter_corpus, resolve_dataset
    from laconic_pyserini.encode import encode_corpus
    from laconic_pyserini.spec import load_spec, resolve_model_location

    from laconic_pyserini.modeling.cpu import kernel_decision
    from laconic_pyserini.modeling.loading import load_model
    from laconic_pyserini.modeling.sparse_encoder import SparseEncoder

    decision = kernel_decision()
    print(decision.summary(), file=sys.stderr)
    spec = load_spec("splade-tiny", max_length=args.max_length)
    folder = resolve_model_location(spec.model)
    docs = list(islice(iter_corpus(resolve_dataset("scifact")), args.docs))
    loaded = load_model(spec, dtype="fp32")
    encoders = {"ours_auto": SparseEncoder(spec, loaded), "ours_screened": SparseEncoder(spec, loaded, screen=True),
                "ours_screened_int8": SparseEncoder(spec, loaded, screen="int8"),
                "ours_fp32_exact": SparseEncoder(spec, loaded, screen=False)}
    chunked = SparseEncoder(spec, loaded, screen=False)
    chunked.head_kernel = "model-dtype"  # the B×L×V chunked head every fp32 model ran with screen=False before
    encoders["ours_fp32_chunked"] = chunked
    theirs = SpladeDocumentEncoder(folder, device="cpu")
    config = loaded.model.config

    texts = [d.contents for d in docs]
    lengths = encoders["ours_auto"].tokenize_lengths(texts)
    useful = sum(n * flops_per_token(config, n) for n in lengths)

    results: dict[str, list[dict]] = {name: [] for name in encoders} | {"pyserini": []}
    identical: list[bool] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        with open(corpus / "corpus.jsonl", "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
        for round_ in range(args.rounds):
            outputs = {}
            for name, encoder in encoders.items():  # interleaved: a load change hits every row alike
                out = Path(tmp) / f"{name}{round_}"
                wall, cpu = time.perf_counter(), time.process_time()
                encode_corpus(corpus, out, encoder=encoder, batch_size=args.batch_size, progress=False)
                results[name].append({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu})
                outputs[name] = [p.read_bytes() for p in sorted((out / "vectors").glob("*.jsonl"))]
            identical.append(all(parts == outputs["ours_auto"] for parts in outputs.values()))

            wall, cpu = time.perf_counter(), time.process_time()
            for b0 in range(0, len(docs), args.batch_size):
                batch = docs[b0:b0 + args.batch_size]
                theirs.encode([d.text for d in batch], titles=[d.title for d in batch], max_length=args.max_length)
            results["pyserini"].append({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu})
            print(f"round {round_}: " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in results.items()),
                  file=sys.stderr)

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    summary = {"cpu": decision.to_dict(), "auto_head": encoders["ours_auto"].head_kernel,
               "docs": len(docs), "batch_size": args.batch_size, "max_length": args.max_length,
               "torch_threads": torch.get_num_threads(), "mean_tokens": sum(lengths) / len(lengths),
               "gflop_per_doc": useful / len(docs) / 1e9, "rounds": args.rounds,
               "outputs_identical": identical}
    for name, runs in results.items():
        wall, cpu = median([r["wall_s"] for r in runs]), median([r["cpu_s"] for r in runs])
        summary[name] = {"wall_s": wall, "cpu_s": cpu, "docs_per_s": len(docs) / wall,
                         "docs_per_cpu_s": len(docs) / cpu, "matmul_fraction": useful / wall / MATMUL_LIMIT,
                         "matmul_fraction_bf16": useful / wall / MATMUL_LIMIT_BF16,
                         "runs": runs}
    ours = list(encoders)
    summary["ratios_vs_pyserini"] = {name: {"wall": summary["pyserini"]["wall_s"] / summary[name]["wall_s"],
                                            "cpu": summary["pyserini"]["cpu_s"] / summary[name]["cpu_s"]}
                                     for name in ours}
    best = min(ours[1:], key=lambda name: summary[name]["cpu_s"])
    summary["auto_vs_best_forced_cpu"] = {"best": best, "ratio": summary[best]["cpu_s"] / summary["ours_auto"]["cpu_s"]}
    text = json.dumps(summary, indent=2)
    print(text)
    print("\n| encoder | wall s | docs/s (wall) | process CPU s | docs per CPU-second |\n|---|---|---|---|---|")
    for name in ours + ["pyserini"]:
        row = summary[name]
        print(f"| {name} | {row['wall_s']:.2f} | {row['docs_per_s']:.1f} | {row['cpu_s']:.2f} | "
              f"{row['docs_per_cpu_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
