"""The trainer: one phase of the curriculum from a :class:`~.config.Config`.

Single process (``python -m laconic_pyserini.train``) or one process per device under torchrun (DDP; passages and
queries are gathered across processes for the loss). Each optimizer step consumes ``grad_accum`` micro-batches;
micro-batch ``m`` is fixed by the seed (:class:`.data.BatchOrder`), so a resumed run continues with exactly the
batch an uninterrupted run would have seen next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from ..modeling.cpu import resolve_dtype, threads
from ..outputs import claim_folder, open_folder, write_json_atomic, write_text_atomic
from . import distributed
from .checkpoint import latest_checkpoint, load_checkpoint, load_weights, save_checkpoint, step_checkpoint
from .config import Config, check_inputs
from .data import BatchOrder, batch_texts, load_examples
from .losses import flops_weight, laconic_loss
from .model import backbone_spec, build_trainable, save_output, trainable_state

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
FINAL = "final"
KIND = "training"  # what output_dir/manifest.json says (laconic_pyserini.outputs)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int):
    """Multiplier of the peak learning rate at a step: linear warm-up, then cosine / linear decay to 0, or flat."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def total_steps(config: Config, order: BatchOrder) -> int:
    if config.train.max_steps is not None:
        return config.train.max_steps
    return max(1, int(config.train.epochs * order.per_epoch) // config.train.grad_accum)


def _device(world: distributed.World) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def train(config: Config, *, stop_after: int | None = None) -> Path:
    """Run (or resume) one phase; returns the output folder (``output_dir/final``), or the output dir itself when
    ``stop_after`` steps of this invocation end it early (a time-boxed job; rerun to continue)."""
    check_inputs(config)  # missing files are reported before the model loads, not after
    output_dir = Path(config.train.output_dir)
    claim_folder(output_dir, KIND, flag="another train.output_dir", ours=_earlier_training)  # before any model loads
    world = distributed.init("cuda" if torch.cuda.is_available() else "cpu")
    device = _device(world)
    try:
        with threads(config.train.threads):
            return _train(config, output_dir, world, device, stop_after)
    finally:
        distributed.shutdown()


def train_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for the config's ``auto`` / ``fp32`` / ``bf16`` on ``device`` (the rule of
    :func:`laconic_pyserini.modeling.cpu.resolve_dtype` for decoders: bf16 only where its kernels are fast)."""
    return resolve_dtype(precision, decoder=True, device=device.type)


@dataclasses.dataclass
class _Run:
    """Everything one phase's loop reads, built once by :func:`_prepare`."""

    config: Config
    world: distributed.World
    device: torch.device
    output_dir: Path
    spec: object
    trainable: object
    model: torch.nn.Module
    examples: list
    order: BatchOrder
    steps: int
    negatives: int
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    precision: str         # fp32 or bf16 (autocast), the config's ``auto`` resolved for this device


def _prepare(config: Config, output_dir: Path, world: distributed.World, device: torch.device) -> _Run:
    cfg = config.train
    spec = backbone_spec(config.model)
    if not cfg.merge and spec.gguf_file:
        from .config import ConfigError

        # The encoder's loader reads an adapter's tokenizer from the GGUF base, which the adapter folder lacks.
        raise ConfigError(f"{config.source}: train.merge: false over a GGUF backbone ({spec.gguf_file}) would "
                          "write an adapter the encoder cannot load yet; use train.merge: true")
    precision = train_precision(cfg.precision, device)
    logger.info("precision %s (config: %s) on %s", precision, cfg.precision, device)
    # bf16 weights only where bf16 kernels are the fast path; on CPUs the base stays fp32 and autocast runs bf16.
    load_dtype = "bf16" if precision == "bf16" and device.type == "cuda" else "fp32"
    trainable = build_trainable(spec, config.lora, query_max_length=cfg.query_max_length,
                                passage_max_length=cfg.passage_max_length, device=str(device), dtype=load_dtype,
                                gradient_checkpointing=cfg.gradient_checkpointing,
                                center_head=config.model.center_head)
    module = trainable.module
    model = module
    if world.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    examples = load_examples(config.data.train, sources=config.data.sources,
                             exclude_sources=config.data.exclude_sources, max_examples=config.data.max_examples,
                             need_negatives=cfg.phase == 2)
    order = BatchOrder(len(examples), cfg.batch_size, world.world_size, cfg.seed)
    steps = total_steps(config, order)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.optim.schedule, int(config.optim.warmup_ratio * steps), steps))
    return _Run(config, world, device, output_dir, spec, trainable, model, examples, order, steps,
                config.data.negatives if cfg.phase == 2 else 0, params, optimizer, scheduler, precision)


def _resume(run: _Run) -> int:
    """The step to start at (0, or the latest checkpoint's); the main process writes the config and the log."""
    cfg, start = run.config.train, 0
    resume_from = latest_checkpoint(run.output_dir)
    if resume_from is not None:
        state = load_checkpoint(resume_from, module=run.trainable.module, optimizer=run.optimizer,
                                scheduler=run.scheduler, rank=run.world.rank)
        start = int(state["step"])
        logger.info("resumed from %s at step %d of %d", resume_from, start, run.steps)
    if run.world.is_main:
        open_folder(run.output_dir, KIND, flag="another train.output_dir", ours=_earlier_training)
        write_json_atomic(run.output_dir / "config.json", run.config.to_dict())
        _truncate_log(run.output_dir / LOG_FILE, start)
        logger.info("%d examples, %d micro-batches of %d per process per epoch, %d processes, %d steps "
                    "(grad_accum %d, %d negatives per query)", len(run.examples), run.order.per_epoch,
                    cfg.batch_size, run.world.world_size, run.steps, cfg.grad_accum, run.negatives)
    return start


def _accumulate(run: _Run, step: int, weight_q: float, weight_p: float) -> dict[str, float]:
    """Forward and backward over the step's ``grad_accum`` micro-batches; the loss terms, averaged."""
    cfg, loss, world, device = run.config.train, run.config.loss, run.world, run.device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if run.precision == "bf16"
                else contextlib.nullcontext())
    gather = distributed.gather_with_grad if world.distributed and cfg.gather_negatives else None
    sums: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        epoch, indices = run.order.indices(step * cfg.grad_accum + micro, world.rank)
        queries, passages, group = batch_texts(
            run.examples, indices, epoch, negatives=run.negatives, seed=cfg.seed,
            query_text=run.spec.query_text, passage_text=run.spec.document_text)
        q_ids, q_mask = run.trainable.query_tokenizer.tokenize(queries)
        p_ids, p_mask = run.trainable.passage_tokenizer.tokenize(passages)
        last = micro == cfg.grad_accum - 1
        sync = run.model.no_sync() if world.distributed and not last else contextlib.nullcontext()
        with sync:
            with autocast:
                q_reps, p_reps = run.model(q_ids.to(device), q_mask.to(device), p_ids.to(device), p_mask.to(device))
            terms = laconic_loss(q_reps.float(), p_reps.float(), group_size=group, temperature=loss.temperature,
                                 flops_query=weight_q, flops_passage=weight_p, gather=gather, rank=world.rank)
            (terms["loss"] / cfg.grad_accum).backward()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(distributed.all_reduce_mean(value.detach())) / cfg.grad_accum
    return sums


def _log_step(run: _Run, record: dict, seconds_per_step: float) -> None:
    with open(run.output_dir / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    logger.info("step %d/%d loss %.4f info_nce %.4f flops_q %.2f flops_p %.2f nnz_q %.0f nnz_p %.0f "
                "lr %.2e (%.1f s/step)", record["step"], run.steps, record["loss"], record["info_nce"],
                record["flops_q"], record["flops_p"], record["nonzero_q"], record["nonzero_p"], record["lr"],
                seconds_per_step)


def _train(config: Config, output_dir: Path, world: distributed.World, device: torch.device,
           stop_after: int | None) -> Path:
    cfg = config.train
    torch.manual_seed(cfg.seed + world.rank)
    run = _prepare(config, output_dir, world, device)
    start, steps = _resume(run), run.steps
    flops_warmup = int(config.loss.flops_warmup_ratio * steps)
    began, done_here = time.perf_counter(), 0
    for step in range(start, steps):
        weight_q = flops_weight(step, config.loss.flops_query, flops_warmup)
        weight_p = flops_weight(step, config.loss.flops_passage, flops_warmup)
        sums = _accumulate(run, step, weight_q, weight_p)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, config.optim.max_grad_norm)
        lr = run.scheduler.get_last_lr()[0]
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        done_here += 1
        finished = step + 1
        if world.is_main and (finished % cfg.log_every == 0 or finished == steps or finished == start + 1):
            _log_step(run, {"step": finished, "lr": lr, "flops_weight_q": weight_q, "flops_weight_p": weight_p,
                            "grad_norm": float(grad_norm), **sums, "seconds": round(time.perf_counter() - began, 2)},
                      (time.perf_counter() - began) / done_here)
        if finished % cfg.save_every == 0 or finished == steps or (stop_after and done_here >= stop_after):
            save_checkpoint(output_dir, finished, weights=trainable_state(run.trainable.module),
                            optimizer=run.optimizer, scheduler=run.scheduler,
                            state={"config": config.to_dict(), "total_steps": steps}, rank=world.rank,
                            keep=cfg.keep_checkpoints)
        if stop_after is not None and done_here >= stop_after and finished < steps:
            logger.info("stopping after %d steps of this run (step %d of %d); rerun to continue", done_here,
                        finished, steps)
            return output_dir
    final = output_dir / FINAL
    if world.is_main:
        save_output(run.trainable, final, name=config.model.name, merge=cfg.merge,
                    extra={"config": config.to_dict(), "steps": steps, "examples": len(run.examples),
                           "processes": world.world_size, "backbone_spec": run.spec.to_dict()})
        logger.info("trained encoder -> %s (load it with --encoder %s)", final, final)
    distributed.barrier()
    return final


def export_checkpoint(config: Config, step: int, out_dir: str | os.PathLike | None = None) -> Path:
    """Write the encoder of an earlier checkpoint (early stopping) as a run's output is written: merged weights
    or adapter, tokenizer, ``encoder_spec.json``. Default folder: ``output_dir/step-N-final``.

    Step 0 is the model training starts from (the backbone, its head centred if the config says so, LoRA at zero):
    the untrained baseline of a run, evaluated through the same path."""
    output_dir = Path(config.train.output_dir)
    path = step_checkpoint(output_dir, step) if step != 0 else None
    with threads(config.train.threads):
        cfg = config.train
        spec = backbone_spec(config.model)
        trainable = build_trainable(spec, config.lora, query_max_length=cfg.query_max_length,
                                    passage_max_length=cfg.passage_max_length, center_head=config.model.center_head)
        steps = int(load_weights(path, trainable.module)["step"]) if path is not None else 0
        target = Path(out_dir) if out_dir is not None else output_dir / f"step-{step}-{FINAL}"
        save_output(trainable, target, name=config.model.name, merge=cfg.merge,
                    extra={"config": config.to_dict(), "steps": steps,
                           "exported_from": str(path) if path is not None else "the backbone (step 0)",
                           "backbone_spec": spec.to_dict()})
    logger.info("encoder of %s -> %s (load it with --encoder %s)", path or "step 0", target, target)
    return target


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step: those steps are about to be redone."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _earlier_training(folder: Path) -> bool:
    """A training output of a version that wrote no manifest: its config.json beside its log or checkpoints."""
    return (folder / "config.json").is_file() and ((folder / LOG_FILE).is_file() or (folder / "checkpoints").is_dir())
