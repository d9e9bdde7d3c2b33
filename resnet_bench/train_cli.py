"""`resnet-bench train`: one grid cell by hand, every recipe and architecture key a flag.

Each flag sets one key of the same typed schema a sweep validates (resnet_bench.config), so a bad
value is one line naming the flag and what is allowed; a flag left out keeps the recipe's value
(or the schema's default).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from resnet_bench import config as cfg
from resnet_bench import runtime as rt
from resnet_bench.train import pin_numeric_environment, train_cell
from resnet_bench.vocab import BOTTLENECK_STRIDES, SHORTCUTS, VARIANTS

# Flags that set a config value: flag -> key path. They default to None ("not given"),
# so the recipe (and the schema's defaults) decide anything not on the command line.
FLAG_KEYS = {
    "recipe": "recipe.name", "epochs": "recipe.epochs", "batch_size": "recipe.batch_size", "lr": "recipe.lr",
    "momentum": "recipe.momentum", "nesterov": "recipe.nesterov", "weight_decay": "recipe.weight_decay",
    "schedule": "recipe.schedule", "milestones": "recipe.milestones", "gamma": "recipe.gamma",
    "warmup_iters": "recipe.warmup_iters", "warmup_lr": "recipe.warmup_lr",
    "label_smoothing": "recipe.label_smoothing", "crop_pad": "recipe.augment.crop_pad",
    "flip": "recipe.augment.flip",
    "stem": "arch.stem", "width": "arch.width", "variant": "arch.variant", "shortcut": "arch.shortcut",
    "bottleneck_stride": "arch.bottleneck_stride", "zero_init_residual": "arch.zero_init_residual",
    "amp": "runtime.amp", "channels_last": "runtime.channels_last", "compile": "runtime.compile",
    "compile_mode": "runtime.compile_mode", "tf32": "runtime.tf32",
    "threads": "runtime.threads", "deterministic": "runtime.deterministic",
}


def _fractions(text: str) -> list[float]:
    """`--milestones 0.5,0.75` (fractions of training; '' for none); the schema judges the values."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated fractions in (0, 1) such as 0.5,0.75 (or '' for "
                                         f"none), got {text[:80]!r}") from None


def _recipe_default(key: str) -> str:
    """`default: the recipe's (quick: 0.9)`, from the named recipes themselves."""
    value = cfg.RECIPES[cfg.DEFAULT_RECIPE]
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, list):
        value = ",".join(map(str, value)) or "none"
    return f"default: the recipe's ({cfg.DEFAULT_RECIPE}: {value})".replace("%", "%%")


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    arch, bool_ = cfg.Arch(), argparse.BooleanOptionalAction
    p = Parser(prog="resnet-bench train", description="Train one grid cell by hand.")
    p.add_argument("--model", required=True, help="registered model name, e.g. resnet18_v2")
    p.add_argument("--dataset", default="digits", help="a prepared dataset under --prepared-dir")
    p.add_argument("--prepared-dir", default="data/prepared", help="folder of prepared datasets")
    p.add_argument("--seed", type=int, default=0, help="the cell's seed (weights, data order, augmentation)")
    recipe = p.add_argument_group("recipe (each flag overrides one key of --recipe)")
    recipe.add_argument("--recipe", help=f"named recipe ({', '.join(cfg.RECIPES)}; default {cfg.DEFAULT_RECIPE})")
    recipe.add_argument("--epochs", type=int, help=_recipe_default("epochs"))
    recipe.add_argument("--batch-size", type=int, help=f"images per step; {_recipe_default('batch_size')}")
    recipe.add_argument("--lr", type=float, help=f"peak learning rate; {_recipe_default('lr')}")
    recipe.add_argument("--momentum", type=float, help=f"SGD momentum in [0, 1); {_recipe_default('momentum')}")
    recipe.add_argument("--nesterov", action=bool_, help=f"Nesterov momentum; {_recipe_default('nesterov')}")
    recipe.add_argument("--weight-decay", type=float, help=f"L2 penalty; {_recipe_default('weight_decay')}")
    recipe.add_argument("--schedule", help=f"{', '.join(cfg.SCHEDULES)}; {_recipe_default('schedule')}")
    recipe.add_argument("--milestones", type=_fractions, help="comma-separated fractions of training where "
                        f"schedule step multiplies lr by --gamma, e.g. 0.5,0.75 ('' for none); "
                        f"{_recipe_default('milestones')}")
    recipe.add_argument("--gamma", type=float, help=f"lr factor at each milestone; {_recipe_default('gamma')}")
    recipe.add_argument("--warmup-iters", type=int, help="iterations at --warmup-lr before the schedule "
                        f"starts (He et al.: 400 for the deepest nets); {_recipe_default('warmup_iters')}")
    recipe.add_argument("--warmup-lr", type=float, help=f"learning rate of the warm-up; "
                                                         f"{_recipe_default('warmup_lr')}")
    recipe.add_argument("--label-smoothing", type=float, help=f"in [0, 1); {_recipe_default('label_smoothing')}")
    recipe.add_argument("--crop-pad", type=int, help="zero-pad this many pixels, then random-crop back "
                        f"(He et al.: 4); {_recipe_default('augment.crop_pad')}")
    recipe.add_argument("--flip", action=bool_, help=f"random horizontal flip; {_recipe_default('augment.flip')}")
    net = p.add_argument_group("architecture")
    net.add_argument("--unit", help=f"residual unit at the model's depth ({', '.join(cfg.UNITS)}; default: the "
                                    "model's version's own)")
    net.add_argument("--variant", help=f"{', '.join(VARIANTS)}: torchvision/timm networks, or the papers' "
                                       f"(default: {arch.variant})")
    net.add_argument("--shortcut", help=f"{', '.join(SHORTCUTS)} (default: the variant's)")
    net.add_argument("--bottleneck-stride", help=f"{', '.join(BOTTLENECK_STRIDES)}: where a downsampling "
                                                 "bottleneck strides (default: the variant's)")
    net.add_argument("--stem", help=f"cifar or imagenet (default {arch.stem})")
    net.add_argument("--width", type=int, help="base channels (default: the family's)")
    net.add_argument("--zero-init-residual", action=bool_, help="zero-initialise each unit's last BatchNorm "
                     f"(default: {'on' if arch.zero_init_residual else 'off'})")
    run = p.add_argument_group("runtime")
    run.add_argument("--device", help="auto (this machine's GPU if any), cpu, cuda, cuda:N (GPU N of this "
                                      "machine; the cell records cuda); default: auto")
    run.add_argument("--amp", help="none, bf16, fp16 (fp16: CUDA only; bf16 on CPU needs AMX-BF16 or AVX512-BF16); "
                                   "default: the device's (bf16 on CUDA, none on CPU), as in an experiment")
    run.add_argument("--channels-last", action=bool_, help="default: the device's (on for CUDA, off for CPU)")
    run.add_argument("--compile", action=bool_, help=f"torch.compile the model (default: "
                                                     f"{'on' if cfg.Runtime().compile else 'off'})")
    run.add_argument("--compile-mode", help=f"torch.compile mode ({', '.join(cfg.COMPILE_MODES)}; default "
                                            f"{cfg.Runtime().compile_mode})")
    run.add_argument("--tf32", action=bool_, help="TF32 float32 matmuls and convolutions (CUDA; default off)")
    run.add_argument("--threads", type=int, help="CPU threads (default: one per CPU of the trial, as a sweep)")
    run.add_argument("--deterministic", action=bool_,
                     help="default: the device's (on for CPU float32, off for CUDA)")
    p.add_argument("--out", help="a JSON file: write the result record there (replaced only if it is a record; "
                                 "default: no file)")
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
    # One layer per flag, so that a bad value is reported against its flag (`--dataset: grid.datasets.0: ...`).
    layers = [cfg.Layer("--unit" if args.unit is not None else "--model", {"grid": grid}),
              cfg.Layer("--dataset", {"grid": {"datasets": [args.dataset]}}),
              cfg.Layer("--seed", {"grid": {"seeds": [args.seed]}})]
    for flag, path in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            layers.append(cfg.Layer(f"--{flag.replace('_', '-')}", _nested(path, value)))
    # By hand, `auto` means this machine's GPU when it has one (a sweep decides by trial resources);
    # `cuda:N` picks GPU N of this machine (main() makes it the current device) and the cell says cuda.
    device = args.device or "auto"
    cell_device = "cuda" if re.fullmatch(r"cuda:[0-9]+", device) else device  # else the schema judges it
    if cell_device == "cuda":
        problem = rt.local_device_problem(device)
        if problem:
            raise cfg.ConfigError(f"--device: {problem}; valid here: auto, cpu")
    if cell_device != "auto":
        layers.append(cfg.Layer("--device", {"runtime": {"device": cell_device}}))
    if cell_device == "cuda" or (cell_device == "auto" and torch.cuda.is_available()):
        layers.append(cfg.Layer("this machine's GPU", {"resources": {"gpus_per_trial": 1}}))
    resolved = cfg.resolve_layers("manual", layers, cfg.Params(), check_datasets=False)
    prepared = Path(args.prepared_dir)
    available = sorted(p.name for p in prepared.glob("*") if (p / "meta.json").exists())
    if args.dataset not in available:
        raise cfg.ConfigError(f"--dataset: {args.dataset!r} is not prepared under {prepared}; prepared: "
                              f"{', '.join(available) or '(none: run `dvc repro` or `resnet-bench prepare`)'}")
    (cell,) = cfg.expand_grid(resolved.experiment, data={args.dataset: cfg.data_identity(prepared / args.dataset)},
                              code_fingerprint=code_fingerprint())
    problem = rt.cpu_bf16_problem(cell.runtime.device, cell.runtime.amp)
    if problem:
        raise cfg.ConfigError(f"--amp: {problem}")
    return cell


def _is_our_record(path) -> bool:
    """An existing --out file `train` may replace: a cell record (a JSON object with cell_id and config)."""
    from resnet_bench.inputs import InputError, read_json

    try:
        doc = read_json(path)
    except InputError:
        return False
    return isinstance(doc, dict) and {"cell_id", "status", "config"} <= set(doc)


def main(argv=None) -> int:
    from resnet_bench import console as c
    from resnet_bench.outputs import OutputError, OutputFile
    from resnet_bench.sweep.records import parse_record

    args = parse_args(argv)
    try:
        cell = cell_from_args(args)
        # a file, writable before training
        out = OutputFile(args.out, writer="train", flag="--out", ours=_is_our_record).prepare() if args.out else None
    except (cfg.ConfigError, OutputError) as err:
        print("\n".join(f"error: {line}" for line in getattr(err, "problems", [str(err)])), file=sys.stderr)
        return 2
    pin_numeric_environment(cell)
    if args.device and re.fullmatch(r"cuda:[0-9]+", args.device):
        torch.cuda.set_device(torch.device(args.device))  # events, allocations and the record name GPU N
    from resnet_bench.progress import Progress

    bar = Progress(label=f"train {cell.model}", total=cell.recipe.epochs, unit="epochs")

    def on_epoch(r):
        bar.update(1, note=f"loss {c.sig(r['train_loss'])}, val {c.percent(r['val_acc'])}, "
                           f"{c.img_per_s(r['steady_train_img_per_s'] or r['train_img_per_s'])} img/s")

    from resnet_bench.env import code_fingerprint, git_info

    try:
        record = train_cell(cell, args.prepared_dir, on_epoch=on_epoch,
                            provenance={"git": git_info(), "code_fingerprint": code_fingerprint()})
    except rt.DoesNotFit as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    bar.close()
    if out is not None:  # through the record schema, as the sweep writes it
        out.write_text(parse_record(record, "the trained record").to_json())
    m = record["metrics"]
    print(f"{cell.model} on {cell.dataset} (seed {cell.seed}): status {record['status']}, "
          f"test acc {c.percent(m.get('test_acc'))}, best val acc {c.percent(m.get('best_val_acc'))} "
          f"(epoch {m.get('best_val_epoch')}), {c.img_per_s(m.get('train_img_per_s'))} train img/s, "
          f"{c.count(m['params'])} params" + (f"; record (full precision): {out.path}" if out is not None else ""))
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
