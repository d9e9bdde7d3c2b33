"""One grid cell: train a model on a prepared dataset from one resolved config.

The cell is a `resnet_bench.config.Cell` (a dict is validated into one on
arrival, as a Ray trial receives it). The result is the record described in docs/ARCHITECTURE.md (metrics, per-epoch
curves, provenance). Training-loop throughput (`train_img_per_s`) includes the
on-device augmentation and the optimiser step; the clean model-only figures
come from `resnet_bench.bench`, run separately so that timing is not distorted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from resnet_bench import config as cfg
from resnet_bench.env import environment, node_info, numeric_environment


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with `deterministic`, refuse nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting to be deterministic (PyTorch "Reproducibility" notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)


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


def _autocast(runtime: cfg.Runtime, device: torch.device):
    amp = runtime.amp
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model, loader, runtime: cfg.Runtime, device, topk: int = 1) -> dict:
    """Mean loss, top-1 and (topk > 1) top-k accuracy over a loader."""
    model.eval()
    loss_sum, correct, correct_k, n = 0.0, 0, 0, 0
    for x, y in loader:
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(runtime, device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        if topk > 1:
            correct_k += (logits.topk(topk, dim=1).indices == y[:, None]).any(1).sum().item()
        n += y.numel()
    out = {"loss": loss_sum / max(1, n), "acc": correct / max(1, n)}
    if topk > 1:
        out[f"top{topk}_acc"] = correct_k / max(1, n)
    return out


def _loaders(cell: cfg.Cell, prepared_dir: Path, device: torch.device):
    """(train, val, test loaders, meta, notes): the train split augmented by the recipe, val/test as stored."""
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
    common = {"mean": meta["mean"], "std": meta["std"], "device": device, "batch_size": recipe.batch_size,
              "seed": cell.seed, "drop_last": False}
    train = DeviceLoader(torch.from_numpy(ds.train_x), torch.from_numpy(ds.train_y), shuffle=True,
                         augment=Augment.from_dict(augment), extents=ds.train_extents, epochs=recipe.epochs,
                         **common)
    val = DeviceLoader(torch.from_numpy(ds.val_x), torch.from_numpy(ds.val_y), shuffle=False, **common)
    test = DeviceLoader(torch.from_numpy(ds.test_x), torch.from_numpy(ds.test_y), shuffle=False, **common)
    return train, val, test, meta, notes


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def train_cell(cell: cfg.Cell | dict, prepared_dir: str | Path, *, checkpoint_path: str | Path | None = None,
               on_epoch: Callable[[dict], None] | None = None, provenance: dict | None = None,
               on_checkpoint: Callable[[Path, dict], None] | None = None) -> dict:
    """Train and evaluate one cell; returns its result record (status ok or diverged).

    Exceptions other than divergence propagate: the caller (the sweep) records them.
    A checkpoint is written after every epoch; an existing checkpoint for the same
    cell id is resumed, giving the same numbers as an uninterrupted run on CPU.
    `provenance`: what the driver captured once (git commit, code fingerprint); the
    record adds this process's node and numeric environment.
    `on_checkpoint(path, epoch_record)` runs once that epoch's checkpoint file is
    complete on disk (the sweep hands it to Ray Tune, which persists it to storage).
    """
    cell = cell if isinstance(cell, cfg.Cell) else cfg.Cell.model_validate(cell)
    started, t0 = utcnow(), time.perf_counter()
    runtime, recipe = cell.runtime, cell.recipe
    device = torch.device(runtime.device)
    if device.type == "cpu" and runtime.threads:
        torch.set_num_threads(runtime.threads)
    seed_everything(cell.seed, runtime.deterministic)
    if device.type == "cuda" and not runtime.deterministic:
        torch.backends.cudnn.benchmark = True

    train_loader, val_loader, test_loader, meta, augment_notes = _loaders(cell, Path(prepared_dir), device)
    num_classes, in_channels = meta["num_classes"], meta["channels"]
    topk = 5 if num_classes >= 100 else 1
    model = build_cell_model(cell, num_classes, in_channels).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    step_model = torch.compile(model) if runtime.compile else model
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and runtime.amp == "fp16")

    epochs_total = recipe.epochs
    steps_per_epoch = len(train_loader)
    total_steps = epochs_total * steps_per_epoch
    history: list[dict] = []
    start_epoch = 1
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state.get("cell_id") == cell.cell_id:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history = state["history"]
            start_epoch = state["epoch"] + 1

    status, error = "ok", None
    for epoch in range(start_epoch, epochs_total + 1):
        model.train()
        train_loader.set_epoch(epoch)
        step = (epoch - 1) * steps_per_epoch
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_epoch = time.perf_counter()
        for x, y in train_loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, recipe)
            if runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(runtime, device):
                logits = step_model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            # Sums stay on the device: no host sync per step (one per epoch below).
            loss_sum += loss.detach() * y.numel()
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_s = time.perf_counter() - t_epoch
        train_loss = (loss_sum / max(1, seen)).item()
        val = evaluate(model, val_loader, runtime, device)
        # The test curve is for plots only (He et al. 2016 Fig. 1/6 style); the model is
        # chosen on validation, never on test.
        test = evaluate(model, test_loader, runtime, device)
        record = {"epoch": epoch, "iteration": step, "train_loss": train_loss,
                  "train_acc": (correct / max(1, seen)).item(),
                  "val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"], "test_acc": test["acc"],
                  "lr": lr_at(step - 1, total_steps, recipe), "epoch_s": epoch_s,
                  "train_img_per_s": seen / epoch_s}
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if not math.isfinite(train_loss):
            status, error = "diverged", f"train loss is {train_loss} at epoch {epoch}"
            break
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(ckpt, {"cell_id": cell.cell_id, "epoch": epoch, "model": model.state_dict(),
                                    "optimizer": optimizer.state_dict(), "history": history})
            if on_checkpoint:
                on_checkpoint(ckpt, record)

    metrics = summarize(history)
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["fwd_gflops"] = _fwd_gflops(model, (1, in_channels, meta["height"], meta["width"]))
    if status == "ok":
        test = evaluate(model, test_loader, runtime, device, topk=topk)
        metrics.update({"test_acc": test["acc"], "test_loss": test["loss"],
                        "test_top5_acc": test.get("top5_acc")})
    metrics["train_time_s"] = time.perf_counter() - t0
    return {
        "cell_id": cell.cell_id,
        "status": status,
        "error": error,
        "config": cell.to_dict(),
        "metrics": metrics,
        "epochs": history,
        "dataset_meta": {k: meta.get(k) for k in ("name", "num_classes", "channels", "height", "width",
                                                   "counts", "source_sha256", "content_sha256", "split",
                                                   "shapes", "resize")},
        "augment_notes": augment_notes,
        "env": environment(device),
        "provenance": {**(provenance or {}), "node": node_info(), "numeric": numeric_environment()},
        "started_at": started,
        "finished_at": utcnow(),
        "wall_s": time.perf_counter() - t0,
    }


def pin_numeric_environment(cell: cfg.Cell) -> None:
    """Deterministic CPU: AVX2 kernels and fixed threads in this process (env.PINNED_NUMERIC_ENV).

    Call before any tensor computation: ATen, oneDNN and MKL each read their setting once.
    """
    from resnet_bench.env import pinned_env

    if cell.runtime.device == "cpu" and cell.runtime.deterministic:
        os.environ.update(pinned_env(cell.runtime.threads))


def summarize(history: list[dict]) -> dict:
    """Final numbers from per-epoch records: best validation epoch, mean loop throughput."""
    if not history:
        return {"epochs_completed": 0}
    best = max(history, key=lambda r: (r["val_acc"], -r["epoch"]))
    return {
        "epochs_completed": len(history),
        "best_val_acc": best["val_acc"],
        "best_val_epoch": best["epoch"],
        "final_val_acc": history[-1]["val_acc"],
        "final_train_loss": history[-1]["train_loss"],
        "train_img_per_s": float(np.mean([r["train_img_per_s"] for r in history])),
    }


def _fwd_gflops(model, input_shape) -> float | None:
    from resnet_bench.models import model_flops

    was_training = model.training
    model.eval()
    try:
        return model_flops(model, input_shape) / 1e9
    finally:
        model.train(was_training)


# Flags that set a config value: flag -> key path. They default to None ("not given"),
# so the recipe (and the schema's defaults) decide anything not on the command line.
FLAG_KEYS = {
    "recipe": "recipe.name", "epochs": "recipe.epochs", "batch_size": "recipe.batch_size", "lr": "recipe.lr",
    "schedule": "recipe.schedule", "stem": "arch.stem", "width": "arch.width", "device": "runtime.device",
    "amp": "runtime.amp", "channels_last": "runtime.channels_last", "compile": "runtime.compile",
    "threads": "runtime.threads", "deterministic": "runtime.deterministic",
}


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench train", description="Train one grid cell by hand.")
    p.add_argument("--model", required=True, help="registered model name, e.g. resnet18_v2")
    p.add_argument("--dataset", default="digits", help="a prepared dataset under --prepared-dir")
    p.add_argument("--prepared-dir", default="data/prepared")
    p.add_argument("--recipe", help=f"named recipe ({', '.join(cfg.RECIPES)}; default {cfg.DEFAULT_RECIPE})")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, help="default: the recipe's")
    p.add_argument("--lr", type=float, help="default: the recipe's")
    p.add_argument("--schedule", help=f"default: the recipe's ({', '.join(cfg.SCHEDULES)})")
    p.add_argument("--unit", help=f"residual unit at the model's depth ({', '.join(cfg.UNITS)})")
    p.add_argument("--stem", help="cifar or imagenet (default cifar)")
    p.add_argument("--width", type=int, help="base channels (default: the family's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="auto (this machine's GPU if any), cpu, cuda, cuda:N")
    p.add_argument("--amp", help="none, bf16, fp16 (CUDA only)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction)
    p.add_argument("--threads", type=int)
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction)
    p.add_argument("--out", help="write the result record to this JSON file")
    return p.parse_args(argv)


def _nested(path: str, value) -> dict:
    out: dict = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def cell_from_args(args) -> cfg.Cell:
    """A one-cell experiment from command-line flags, validated by the same schema as a sweep."""
    from resnet_bench.env import code_fingerprint
    from resnet_bench.models import available_models, parse_model_name

    valid = available_models()
    if args.model not in valid:
        raise cfg.ConfigError(f"--model: unknown model {args.model!r}; valid: {', '.join(valid)}")
    name = parse_model_name(args.model)
    if args.unit is not None:
        if args.unit not in cfg.UNITS:
            raise cfg.ConfigError(f"--unit: {args.unit!r} is invalid; valid: {', '.join(cfg.UNITS)}")
        if cfg.UNIT_VERSION[args.unit] != name.version:
            raise cfg.ConfigError(f"--unit: {args.unit!r} is a {cfg.UNIT_VERSION[args.unit]} unit but --model "
                                  f"{args.model} is {name.version}; pick a {cfg.UNIT_VERSION[args.unit]} model")
        grid = {"units": [args.unit], "depths": [name.depth]}
    else:
        grid = {"models": [args.model]}
    layers = [cfg.Layer("resnet-bench train", {"grid": {**grid, "datasets": [args.dataset], "seeds": [args.seed]}})]
    for flag, path in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            layers.append(cfg.Layer(f"--{flag.replace('_', '-')}", _nested(path, value)))
    # By hand, `auto` means this machine's GPU when it has one (a sweep decides by trial resources).
    device = args.device or "auto"
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        layers.append(cfg.Layer("this machine's GPU", {"resources": {"gpus_per_trial": 1}}))
        if not torch.cuda.is_available():
            raise cfg.ConfigError(f"--device: {device!r} but this machine has no CUDA GPU; valid here: auto, cpu")
    resolved = cfg.resolve_layers("manual", layers, cfg.Params(), check_datasets=False)
    prepared = Path(args.prepared_dir)
    available = sorted(p.name for p in prepared.glob("*") if (p / "meta.json").is_file())
    if args.dataset not in available:
        raise cfg.ConfigError(f"--dataset: {args.dataset!r} is not prepared under {prepared}; prepared: "
                              f"{', '.join(available) or '(none: run `dvc repro` or `resnet-bench prepare`)'}")
    (cell,) = cfg.expand_grid(resolved.experiment, data={args.dataset: cfg.data_identity(prepared / args.dataset)},
                              code_fingerprint=code_fingerprint())
    return cell


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    from resnet_bench.argparsing import output_file_problem

    try:
        cell = cell_from_args(args)
        if args.out and output_file_problem(args.out):
            raise cfg.ConfigError(output_file_problem(args.out))
    except cfg.ConfigError as err:
        print("\n".join(f"error: {line}" for line in err.problems), file=sys.stderr)
        return 2
    pin_numeric_environment(cell)
    bar = tqdm(total=cell.recipe.epochs, desc=cell.model, unit="epoch", file=sys.stderr)

    def on_epoch(r):
        bar.update(1)
        bar.set_postfix(loss=f"{r['train_loss']:.3f}", val_acc=f"{r['val_acc']:.3f}",
                        img_s=f"{r['train_img_per_s']:.0f}")

    from resnet_bench.env import code_fingerprint, git_info

    record = train_cell(cell, args.prepared_dir, on_epoch=on_epoch,
                        provenance={"git": git_info(), "code_fingerprint": code_fingerprint()})
    bar.close()
    text = json.dumps(record, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    m = record["metrics"]
    print(f"{cell.model} on {cell.dataset} (seed {cell.seed}): status={record['status']} "
          f"test_acc={m.get('test_acc')} best_val_acc={m.get('best_val_acc')} "
          f"(epoch {m.get('best_val_epoch')}) train_img_per_s={m.get('train_img_per_s', 0):.1f} "
          f"params={m['params']:,}")
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
