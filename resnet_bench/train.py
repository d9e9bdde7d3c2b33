"""One grid cell: train a model on a prepared dataset from one resolved config.

The cell is a `resnet_bench.config.Cell` (a dict is validated into one on
arrival, as a Ray trial receives it). The result is the record described in docs/ARCHITECTURE.md (metrics, per-epoch
curves, provenance). Training-loop throughput (`train_img_per_s`) is the steady state of the
loop: full-size batches after the first epoch's warm-up steps (compilation, autotuning), including
on-device loading and augmentation and the optimiser step (`train_epoch`); the clean model-only
figures come from `resnet_bench.bench`, run separately so that timing is not distorted.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from resnet_bench import config as cfg
from resnet_bench import runtime as rt
from resnet_bench.env import environment, node_info, numeric_environment
from resnet_bench.parallel import SINGLE, Ranks


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total_steps: int, recipe: cfg.Recipe) -> float:
    """Learning rate at optimiser step `step` (0-based) of `total_steps`.

    Warm-up (He et al. 2016, Sec. 4.1): `warmup_lr` for the first `warmup_iters`
    steps, then the schedule: `step` divides by 1/gamma at each milestone
    (fractions of training), `cosine` anneals to 0, `onecycle` rises linearly to
    `lr` over the first 30% then anneals to 0 (Smith & Topin 2019 shape).
    """
    # lr_reference_batch: lr is the rate for that batch size, scaled linearly (Goyal et al. 2017).
    base = recipe.lr * recipe.batch_size / recipe.lr_reference_batch if recipe.lr_reference_batch else recipe.lr
    if step < recipe.warmup_iters:
        return recipe.warmup_lr
    frac = step / max(1, total_steps)
    schedule = recipe.schedule
    if schedule == "step":
        passed = sum(frac >= m for m in recipe.milestones)
        return base * recipe.gamma ** passed
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * frac))
    if schedule == "onecycle":
        peak = 0.3
        if frac < peak:
            return base * (0.04 + 0.96 * frac / peak)
        return 0.5 * base * (1 + math.cos(math.pi * (frac - peak) / (1 - peak)))
    assert schedule == "constant", schedule  # the schema admits only cfg.SCHEDULES
    return base


def build_cell_model(cell: cfg.Cell, num_classes: int, in_channels: int) -> torch.nn.Module:
    from resnet_bench.models import build_model

    arch = cell.arch
    options = {"stem": arch.stem, "zero_init_residual": arch.zero_init_residual, "unit": cell.unit,
               "variant": arch.variant, "shortcut": arch.shortcut, "bottleneck_stride": arch.bottleneck_stride}
    if cell.arch.width is not None:
        options["width"] = cell.arch.width
    return build_model(cell.model, num_classes=num_classes, in_channels=in_channels, **options)


def make_optimizer(model: torch.nn.Module, recipe: cfg.Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser; the schema lists only what is built here (cfg.OPTIMIZERS). With
    `bn_weight_decay` false, BatchNorm scales and shifts form a second group without weight decay."""
    assert recipe.optimizer == "sgd", recipe.optimizer
    params = list(model.parameters())
    if not recipe.bn_weight_decay:
        bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              for p in m.parameters(recurse=False)}
        params = [{"params": [p for p in params if id(p) not in bn]},
                  {"params": [p for p in params if id(p) in bn], "weight_decay": 0.0}]
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                           weight_decay=recipe.weight_decay)


@torch.no_grad()
def evaluate(model: rt.Compiled, loader, runtime: cfg.Runtime, device, topk: int = 1, ranks: Ranks = SINGLE) -> dict:
    """Mean loss, top-1 and (topk > 1) top-k accuracy over a loader.

    The sums stay on the device (loss in float64, counts in int64) and are read once at the end:
    the host queues every batch without waiting for the GPU. Several ranks: each evaluates its shard
    (every image on exactly one rank) and the sums are added over the ranks.
    """
    model.model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    correct_k = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    for x, y in loader:
        b = y.numel()
        if model.enabled and b < loader.batch_size:
            # Compiled, static shapes: the partial last batch padded to full size runs the same graph.
            # Rows are independent in eval mode (BN uses its running statistics): the zero rows leave
            # the real rows' logits as they are (up to the kernels chosen for the batch size); cut off.
            x = torch.cat([x, x.new_zeros((loader.batch_size - b, *x.shape[1:]))])
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with model.timing(device), rt.autocast(device, runtime.amp):
            logits = model(x)[:b]
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        if topk > 1:
            correct_k += (logits.topk(topk, dim=1).indices == y[:, None]).any(1).sum()
        n += y.numel()
    sums = torch.stack([loss_sum, correct.double(), correct_k.double(), loss_sum.new_tensor(n)])
    total_loss, total_correct, total_k, n = ranks.sum(sums).tolist()
    out = {"loss": total_loss / max(1, n), "acc": int(total_correct) / max(1, n)}
    if topk > 1:
        out[f"top{topk}_acc"] = int(total_k) / max(1, n)
    return out


def _loaders(cell: cfg.Cell, prepared_dir: Path, device: torch.device, max_resident_bytes: int | None = None,
             ranks: Ranks = SINGLE):
    """(train, val, test loaders, meta, notes): the train split augmented by the recipe, val/test as stored;
    this rank's shards (resnet_bench.data.loader.shard_indices), batches of the per-rank batch."""
    from resnet_bench.data.artifact import load_prepared
    from resnet_bench.data.augment import Augment, store_problems
    from resnet_bench.data.loader import DeviceLoader

    ds = load_prepared(Path(prepared_dir) / cell.dataset)
    meta = ds.meta
    recipe = cell.recipe
    augment = recipe.augment.model_dump()
    problems, notes = store_problems(meta, augment, where=f"dataset {cell.dataset}")
    if problems:
        raise ValueError("; ".join(problems))
    common = {"mean": meta["mean"], "std": meta["std"], "device": device, "batch_size": cell.per_rank_batch,
              "seed": cell.seed, "max_resident_bytes": max_resident_bytes, "rank": ranks.rank,
              "world_size": ranks.world_size}
    # A last global batch that gives a rank one image cannot be trained on: BatchNorm in training mode
    # has one value per channel and raises. Then that batch is left out of the epoch on every rank
    # (drop_last); the shuffle picks different images each epoch. The record says so
    # (dataset_meta.train_last_batch_dropped).
    n_train = len(ds.train_y)
    drop = n_train > 1 and 0 < n_train % recipe.batch_size < 2 * ranks.world_size
    train = DeviceLoader(torch.from_numpy(ds.train_x), torch.from_numpy(ds.train_y), shuffle=True,
                         augment=Augment.from_dict(augment), extents=ds.train_extents, epochs=recipe.epochs,
                         drop_last=drop, **common)
    val = DeviceLoader(torch.from_numpy(ds.val_x), torch.from_numpy(ds.val_y), shuffle=False, **common)
    test = DeviceLoader(torch.from_numpy(ds.test_x), torch.from_numpy(ds.test_y), shuffle=False, **common)
    return train, val, test, meta, notes


def _save_checkpoint(path: Path, state: dict) -> None:
    # Serialised in memory, then written by Python: a full disk is an OSError (ENOSPC) naming
    # nothing torch-internal (torch's own writer says "unexpected pos N vs M").
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def train_epoch(loop: dict, epoch: int, *, warmup_steps: int) -> dict:
    """One epoch of `loop` (train_cell's model, optimiser, scaler, loader, ...): its record's training part.

    Steady throughput: the full-size batches after `warmup_steps` (the process's first epoch skips
    compilation, cuDNN autotuning and allocator growth; the partial last batch has its own shape),
    timed on the device from the end of the last warm-up step to the end of the last full batch,
    so it covers loading, augmentation and the optimiser step. The epoch's wall time covers all.
    """
    model, optimizer, scaler, loader = loop["model"], loop["optimizer"], loop["scaler"], loop["train_loader"]
    recipe, runtime, device, ranks = loop["recipe"], loop["runtime"], loop["device"], loop["ranks"]
    model.model.train()
    loader.set_epoch(epoch)
    step = (epoch - 1) * loop["steps_per_epoch"]
    full_batches = len(loader.y) // recipe.batch_size  # global batches that give every rank a full share
    steady_steps = max(0, full_batches - warmup_steps)
    window = rt.DeviceTimer(device)
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    rt.synchronize(device)
    t_epoch = time.perf_counter()
    if steady_steps and warmup_steps == 0:
        window.start()
    for i, (x, y) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, loop["total_steps"], recipe)
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with model.timing(device):
            logits, loss = rt.train_step(model, optimizer, scaler, x, y, device=device, amp=runtime.amp,
                                         label_smoothing=recipe.label_smoothing)
        # Sums stay on the device: no host sync per step (one per epoch below).
        loss_sum += loss.detach() * y.numel()
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
        step += 1
        if steady_steps and i + 1 == warmup_steps:
            window.start()
        if steady_steps and i + 1 == full_batches:
            window.stop()
    # Over the ranks: each rank's sums of its images, one collective per epoch.
    loss_sum, correct, seen = ranks.sum(torch.stack([loss_sum.double(), correct.double(),
                                                      loss_sum.new_tensor(seen, dtype=torch.float64)])).tolist()
    rt.synchronize(device)
    epoch_s = time.perf_counter() - t_epoch
    # Rank 0's clock: every step waits for the gradients of all ranks, so the cell's pace is any rank's.
    steady_s = window.seconds()
    steady_images = steady_steps * recipe.batch_size  # global: all ranks' images
    return {"epoch": epoch, "iteration": step, "train_loss": loss_sum / max(1, seen),
            "train_acc": correct / max(1, seen), "lr": lr_at(step - 1, loop["total_steps"], recipe),
            "epoch_s": epoch_s, "train_img_per_s": seen / epoch_s,
            "steady_images": steady_images, "steady_s": steady_s,
            "steady_train_img_per_s": steady_images / steady_s if steady_s else None}


def train_cell(cell: cfg.Cell | dict, prepared_dir: str | Path, *, checkpoint_path: str | Path | None = None,
               on_epoch: Callable[[dict], None] | None = None, provenance: dict | None = None,
               on_checkpoint: Callable[[Path, dict], None] | None = None, compile_backend: str = "inductor",
               keep_models: str = "none", on_models: Callable[[dict], None] | None = None,
               ranks: Ranks = SINGLE) -> dict:
    """Train and evaluate one cell; returns its result record (status ok or diverged).

    Exceptions other than divergence propagate: the caller (the sweep) records them. A cell whose
    model and batch do not fit its device (or its share of one) raises `runtime.DoesNotFit` with one
    line naming model, batch, device and memory.
    A checkpoint (model, optimiser, fp16 loss scale) is written after every epoch; an existing
    checkpoint for the same cell id is resumed, giving the same numbers as an uninterrupted run on CPU.
    `provenance`: what the driver captured once (git commit, code fingerprint); the
    record adds this process's node and numeric environment.
    `on_checkpoint(path, epoch_record)` runs once that epoch's checkpoint file is
    complete on disk (the sweep hands it to Ray Tune, which persists it to storage).
    `compile_backend`: torch.compile's backend (dynamo's "eager" traces and compiles nothing, for tests).
    `keep_models` (sweep.keep_models: final | best | none) with `on_models(states)`: an ok cell hands
    `{"final": (epoch, state_dict), "best": (epoch, state_dict)}` (best only with `best`) to `on_models`
    after its final evaluation, the weights that evaluation scored (`_best_weights`).
    `ranks`: this process's rank in the cell's process group (resnet_bench.parallel), `cell.world_size`
    processes in all; the numbers are the whole cell's on every rank, rank 0 writes the checkpoint
    (`on_checkpoint` runs on every rank once it is written).
    """
    cell = cell if isinstance(cell, cfg.Cell) else cfg.Cell.model_validate(cell)
    if ranks.world_size != cell.world_size:
        raise ValueError(f"cell {cell.cell_id} trains on {cell.world_size} rank(s), not {ranks.world_size}")
    started, t0 = utcnow(), time.perf_counter()
    runtime, recipe = cell.runtime, cell.recipe
    device = torch.device(runtime.device)
    problem = rt.cpu_bf16_problem(device.type, runtime.amp)
    if problem:
        raise cfg.ConfigError(problem)
    if device.type == "cpu" and runtime.threads:
        torch.set_num_threads(runtime.threads)
    # The in-process part of the pin, whoever started this process (its environment part is the
    # launcher's: Ray runtime_env, `train`/`verify` before computing); both are recorded below.
    pin_numeric_environment(cell, env=False)
    seed_everything(cell.seed)
    rt.set_determinism(runtime.deterministic, device)
    rt.set_tf32(runtime.tf32)
    cap_bytes = rt.apply_gpu_share(device, cell.gpu_share)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    oom = None
    try:
        record = _train(cell, Path(prepared_dir), device, ckpt=Path(checkpoint_path) if checkpoint_path else None,
                        on_epoch=on_epoch, on_checkpoint=on_checkpoint, compile_backend=compile_backend,
                        cap_bytes=cap_bytes, keep_best=keep_models == "best" and on_models is not None,
                        on_models=on_models if keep_models != "none" else None, ranks=ranks)
    except Exception as err:
        if not rt.is_out_of_memory(err):
            raise
        oom = rt.first_line(err)
    if oom is not None:  # outside the except: its traceback no longer holds the tensors
        rt.release_memory(device)
        raise rt.DoesNotFit(f"{cell.model} at batch {recipe.batch_size} does not fit on "
                            f"{rt.memory_where(device, cap_bytes)}: {oom}")
    metrics = record["metrics"]
    metrics["train_time_s"] = time.perf_counter() - t0
    metrics["gpu_hours"] = (metrics["train_time_s"] / 3600 * cell.gpu_share * cell.world_size
                            if cell.gpu_share else None)
    metrics["train_img_per_s_per_worker"] = (metrics.get("train_img_per_s") or 0) / cell.world_size or None
    metrics["gpu_memory_cap_bytes"] = cap_bytes
    metrics["train_peak_mem_bytes"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "cell_id": cell.cell_id,
        **record,
        "config": cell.to_dict(),
        "env": environment(device),
        "provenance": {**(provenance or {}), "node": node_info(),
                       "numeric": numeric_environment(device, amp=runtime.amp)},
        "started_at": started,
        "finished_at": utcnow(),
        "wall_s": time.perf_counter() - t0,
    }


def _best_weights(model: torch.nn.Module) -> dict:
    """A host copy of the model's state dict: the best-validation weights `keep_models: best` keeps.

    It costs one more copy of the parameters and buffers in host memory while the cell trains (ResNet-152
    at width 64: 60.2M float32 parameters = 241 MB) and the same again in every epoch checkpoint, so a
    retried or resumed trial keeps it too; a device-to-host copy each time validation improves.
    """
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _train(cell: cfg.Cell, prepared_dir: Path, device: torch.device, *, ckpt: Path | None, on_epoch, on_checkpoint,
           compile_backend: str, cap_bytes: int | None, keep_best: bool = False, on_models=None,
           ranks: Ranks = SINGLE) -> dict:
    """The epochs and the final evaluation; the record's status, error, metrics, epochs, compile, dataset."""
    runtime, recipe = cell.runtime, cell.recipe
    train_loader, val_loader, test_loader, meta, augment_notes = _loaders(
        cell, prepared_dir, device, max_resident_bytes=rt.resident_budget_bytes(device, cap_bytes), ranks=ranks)
    num_classes, in_channels = meta["num_classes"], meta["channels"]
    topk = 5 if num_classes >= 100 else 1
    model = build_cell_model(cell, num_classes, in_channels).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    scaler = rt.grad_scaler(device, runtime.amp)
    # Compiled around DDP (PyTorch's guidance: dynamo's DDPOptimizer splits the graph at DDP's gradient
    # buckets, so their all-reduce overlaps the backward); `model` stays the plain module checkpointed.
    net = ranks.wrap(model, sync_bn=cell.arch.sync_bn, device=device)
    compiled = rt.Compiled(net, enabled=runtime.compile, mode=runtime.compile_mode, backend=compile_backend)
    loop = {"model": compiled, "optimizer": optimizer, "scaler": scaler, "train_loader": train_loader, "ranks": ranks,
            "recipe": recipe, "runtime": runtime, "device": device, "steps_per_epoch": len(train_loader),
            "total_steps": recipe.epochs * len(train_loader)}
    history: list[dict] = []
    start_epoch = 1
    best_state = None  # keep_best: the weights of the first epoch with the best validation accuracy
    if ckpt and ckpt.exists():
        # weights_only: tensors, numbers, strings, lists and dicts only; a checkpoint is an input
        # (shared storage), and a full unpickler would run whatever it names.
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("cell_id") == cell.cell_id:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])  # fp16: the loss scale reached, not 2**16 again
            history = state["history"]
            start_epoch = state["epoch"] + 1
            best_state = state.get("best_model")

    status, error = "ok", None
    for epoch in range(start_epoch, recipe.epochs + 1):
        # The first epoch this process trains warms up (compilation, autotuning) before it is timed.
        record = train_epoch(loop, epoch, warmup_steps=max(1, cell.bench.warmup) if epoch == start_epoch else 0)
        ranks.sync_buffers(model)  # every rank evaluates rank 0's running statistics
        val = evaluate(compiled, val_loader, runtime, device, ranks=ranks)
        # The test curve is for plots only (He et al. 2016 Fig. 1/6 style); the model is
        # chosen on validation, never on test.
        test = evaluate(compiled, test_loader, runtime, device, ranks=ranks)
        record.update({"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"],
                       "test_acc": test["acc"]})
        if keep_best and all(record["val_acc"] > r["val_acc"] for r in history):  # summarize's choice
            best_state = _best_weights(model)
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if not math.isfinite(record["train_loss"]):
            status, error = "diverged", f"train loss is {record['train_loss']} at epoch {epoch}"
            break
        if ckpt and ranks.rank == 0:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(ckpt, {"cell_id": cell.cell_id, "epoch": epoch, "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                    "history": history, **({"best_model": best_state} if keep_best else {})})
        if ckpt and on_checkpoint:
            on_checkpoint(ckpt, record)
    metrics = summarize(history)
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["fwd_gflops"] = _fwd_gflops(cell, num_classes, in_channels, (1, in_channels, meta["height"], meta["width"]))
    metrics["amp_grad_scale"] = scaler.get_scale() if scaler.is_enabled() else None
    if status == "ok":
        test = evaluate(compiled, test_loader, runtime, device, topk=topk, ranks=ranks)
        metrics.update({"test_acc": test["acc"], "test_loss": test["loss"],
                        "test_top5_acc": test.get("top5_acc")})
        if on_models:
            states = {"final": (len(history), model.state_dict())}
            if keep_best and best_state is not None:
                states["best"] = (metrics["best_val_epoch"], best_state)
            on_models(states)
    compiled.check()
    return {
        "status": status,
        "error": error,
        "metrics": metrics,
        "epochs": history,
        "compile": compiled.stats(),
        "dataset_meta": {**{k: meta.get(k) for k in ("name", "num_classes", "channels", "height", "width",
                                                      "counts", "source_sha256", "content_sha256", "split",
                                                      "shapes", "resize")},
                         "train_last_batch_dropped": train_loader.drop_last},
        "augment_notes": augment_notes,
    }


def pin_numeric_environment(cell: cfg.Cell, *, env: bool = True) -> str | None:
    """Deterministic CPU: the cell's numeric pin (runtime.numeric_pin, env.NUMERIC_PINS) in this process.

    With `env`, its environment variables and thread counts: call that before any tensor computation
    (ATen, oneDNN and MKL each read theirs once). Always the torch flags: the pin's, or torch's
    defaults for any other cell. Returns the pin level, None when the cell is not deterministic CPU.
    """
    from resnet_bench.env import pinned_env, set_torch_numeric_flags

    rt = cell.runtime
    pin = rt.numeric_pin if rt.device == "cpu" and rt.deterministic else None
    if pin and env:
        os.environ.update(pinned_env(rt.threads, pin))
    set_torch_numeric_flags(pin)
    return pin


def summarize(history: list[dict]) -> dict:
    """Final numbers from per-epoch records: best validation epoch, loop throughput.

    `train_img_per_s`: steady images / steady seconds over every epoch with a steady window
    (`train_epoch`); `train_epoch_img_per_s`: the mean of the epochs' wall-clock rates, the first
    epoch's compilation included.
    """
    if not history:
        return {"epochs_completed": 0}
    best = max(history, key=lambda r: (r["val_acc"], -r["epoch"]))
    timed = [r for r in history if r.get("steady_s")]
    return {
        "epochs_completed": len(history),
        "best_val_acc": best["val_acc"],
        "best_val_epoch": best["epoch"],
        "final_val_acc": history[-1]["val_acc"],
        "final_train_loss": history[-1]["train_loss"],
        "train_img_per_s": (sum(r["steady_images"] for r in timed) / sum(r["steady_s"] for r in timed)
                            if timed else None),
        "train_epoch_img_per_s": float(np.mean([r["train_img_per_s"] for r in history])),
    }


def _fwd_gflops(cell: cfg.Cell, num_classes: int, in_channels: int, input_shape) -> float:
    """Forward GFLOPs of one image, counted on the meta device (shapes only: no memory, no compute)."""
    from resnet_bench.models import model_flops

    with torch.device("meta"):
        model = build_cell_model(cell, num_classes, in_channels)
    return model_flops(model, input_shape) / 1e9


if __name__ == "__main__":  # `python -m resnet_bench.train` is `resnet-bench train`
    from resnet_bench.train_cli import main

    raise SystemExit(main())
