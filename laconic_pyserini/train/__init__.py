"""The two-phase LACONIC training curriculum.

Phase 1 (weakly supervised pre-finetuning): (query, passage) pairs, in-batch negatives only.
Phase 2 (high-signal fine-tuning): (query, positive, N hard negatives), negatives mined with this toolkit's own
index (:mod:`laconic_pyserini.train.mine`). ``python -m laconic_pyserini.train --config CONFIG.yaml`` runs one phase;
its output folder loads in ``python -m laconic_pyserini.encode --encoder OUTPUT_DIR`` with no extra flags.

Nothing here is imported by ``import laconic_pyserini``; torch is imported inside the modules that need it.
"""
