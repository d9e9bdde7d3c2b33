"""`resnet-bench models` (a table of every model) and `resnet-bench summary` (one model, layer by layer)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from resnet_bench.argparsing import Parser
from resnet_bench.models.registry import (LAYERS, _MODELS, _unknown_model, available_models, build_model,
                                          count_params, model_flops, parse_model_name, resolve_arch)
from resnet_bench.vocab import BOTTLENECK_STRIDES, SHORTCUTS, STEMS, UNITS, VARIANTS

# --------------------------------------------------------------------------- CLI


def _table_order(name: str) -> tuple:
    # ImageNet family, then CIFAR basic, then CIFAR bottleneck; by depth within each.
    family, depth, version = parse_model_name(name)
    return (family != "imagenet", LAYERS[depth][0], depth, version)


# Each family's own input: [v1] Table 1 (ImageNet, 224x224 crops, 1000 classes) and
# [v1] Sec. 4.2 (CIFAR-10, 32x32, 10 classes).
FAMILY_INPUT = {"imagenet": (224, 1000), "cifar": (32, 10)}


def _int_in(lo: int, hi: int):
    """argparse type: an integer in [lo, hi], with argparse's one-line error naming the flag otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {text!r}")
        return value
    parse.__name__ = "integer"
    return parse


# The schema's bounds (resnet_bench.config: Bench.img_size, Arch.width) and the CLI's own.
_positive_int = _int_in(1, 4096)
_IMG, _CHANNELS, _CLASSES, _DEPTH = _int_in(1, 4096), _int_in(1, 64), _int_in(1, 1_000_000), _int_in(0, 64)


def _is_our_models_csv(path) -> bool:
    """An existing --csv file `models` may replace: one it wrote (its header is the table's columns)."""
    from resnet_bench.outputs import csv_header_is

    return csv_header_is(path, lambda cols: cols[:4] == ["model", "family", "block", "units"] and "flops" in cols)


def params_millions(count: int) -> str:
    """Parameters in millions at the papers' printed precision: 0.01M below 1M, 0.1M above.

    [v1] Table 6 prints 0.27M ... 0.85M, 1.7M, 19.4M; [v2] Table 4 1.7M and 10.2M.
    """
    return f"{count / 1e6:.2f}" if count < 1_000_000 else f"{count / 1e6:.1f}"


def model_row(name: str, *, img: int | None = None, num_classes: int | None = None, in_channels: int = 3,
              variant: str = "modern", shortcut: str | None = None,
              bottleneck_stride: str | None = None) -> dict[str, Any]:
    """One line of `resnet-bench models`: architecture, parameters, MACs and FLOPs of one model.

    img / num_classes None: the family's own (FAMILY_INPUT). MACs = multiply-accumulates
    of the conv and linear layers (what [v1] Table 1 calls "FLOPs"); FLOPs = 2 x MACs.
    """
    family, depth, _ = parse_model_name(name)
    arch = resolve_arch(name, variant=variant, shortcut=shortcut, bottleneck_stride=bottleneck_stride)
    img = FAMILY_INPUT[family][0] if img is None else img
    num_classes = FAMILY_INPUT[family][1] if num_classes is None else num_classes
    # Meta device: shapes only, no memory and no arithmetic, so ResNet-1202 at 224x224
    # (about 140 G multiply-adds a forward) takes seconds of Python, not minutes of CPU.
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels, variant=variant, shortcut=shortcut,
                            bottleneck_stride=bottleneck_stride)
    kind, layers = LAYERS[depth]
    flops = model_flops(model, (1, in_channels, img, img))
    params = count_params(model)
    return {
        "model": name,
        "family": family,
        "block": kind,
        "units": "-".join(map(str, layers)),
        "unit": arch["unit"],
        "variant": variant,
        "shortcut": arch["shortcut"],
        # Where a downsampling bottleneck strides; basic blocks have no 1x1 conv to choose.
        "bottleneck_stride": arch["bottleneck_stride"] if kind == "bottleneck" else "",
        "img": img,
        "num_classes": num_classes,
        "params": params,
        "params_m": params_millions(params),
        "macs": flops // 2,  # FlopCounterMode counts 2 FLOPs per multiply-accumulate
        "flops": flops,
    }


def models_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-bench models`: parameters, MACs and FLOPs of registered models, each at its family's input."""
    p = Parser(prog="resnet-bench models", description=models_main.__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help="models to list (default: all)")
    p.add_argument("--image-size", type=_IMG,
                   help="input height = width, pixels, for every model (default: 224 ImageNet family, 32 CIFAR)")
    p.add_argument("--in-channels", type=_CHANNELS, default=3, help="input image channels")
    p.add_argument("--num-classes", type=_CLASSES,
                   help="classes for every model (default: 1000 ImageNet family, 10 CIFAR)")
    p.add_argument("--variant", choices=VARIANTS, default="modern",
                   help="modern (torchvision/timm) or paper (the defining paper's network)")
    p.add_argument("--shortcut", choices=SHORTCUTS, help="default: the variant's")
    p.add_argument("--bottleneck-stride", choices=BOTTLENECK_STRIDES, help="default: the variant's")
    p.add_argument("--csv", metavar="PATH", help="also write the table to this CSV file (default: no file)")
    p.add_argument("--json", action="store_true", help="print the table as one JSON document instead of text")
    p.add_renamed("--img", "--image-size")
    args = p.parse_args(argv)
    unknown = [name for name in args.names if name not in _MODELS]
    if unknown:
        print(f"error: {_unknown_model(unknown[0])}", file=sys.stderr)
        return 2
    out = None
    if args.csv:  # a file; checked before any model is built
        from resnet_bench.outputs import OutputError, OutputFile

        try:
            out = OutputFile(args.csv, writer="models", flag="--csv", ours=_is_our_models_csv).prepare()
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    rows = [model_row(name, img=args.image_size, num_classes=args.num_classes, in_channels=args.in_channels,
                      variant=args.variant, shortcut=args.shortcut, bottleneck_stride=args.bottleneck_stride)
            for name in sorted(args.names or available_models(), key=_table_order)]
    if out is not None:
        from resnet_bench.outputs import csv_guard

        with out.file() as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: csv_guard(v) for k, v in r.items()} for r in rows)
    if args.json:
        from resnet_bench.console import print_json

        print_json({"variant": args.variant, "in_channels": args.in_channels, "rows": rows})
        return 0
    from resnet_bench.console import sig

    print(f"# variant {args.variant}; input 1x{args.in_channels}xIMGxIMG; default stem and width of each family; "
          "params (M) at the papers' precision; MACs = multiply-accumulates of conv and linear layers per "
          "image (what He et al. call FLOPs), FLOPs = 2 x MACs "
          "(torch.utils.flop_counter.FlopCounterMode)")
    header = (f"{'model':<14} {'block':<10} {'units/stage':<12} {'unit':<16} {'shortcut':<10} {'stride':<6} "
              f"{'img':>4} {'classes':>7} {'params':>11} {'params (M)':>10} {'GMACs':>8} {'GFLOPs':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<14} {r['block']:<10} {r['units']:<12} {r['unit']:<16} {r['shortcut']:<10} "
              f"{r['bottleneck_stride'] or '-':<6} {r['img']:>4} {r['num_classes']:>7} {r['params']:>11,} "
              f"{r['params_m']:>10} {sig(r['macs'] / 1e9):>8} {sig(r['flops'] / 1e9):>8}")
    return 0


def _layer_rows(model: nn.Module, x: Tensor, max_depth: int) -> list[tuple[str, str, str, int, int]]:
    """(name, type, output shape, params incl. children, depth) per module call, in call order."""
    rows: list[list] = []
    open_rows: list[int] = []  # indices of rows whose module is running; calls nest
    handles = []

    def pre_hook(module: nn.Module, _inputs: Any, name: str, depth: int) -> None:
        open_rows.append(len(rows))
        rows.append([name, type(module).__name__, "", count_params(module), depth])

    def post_hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        row = rows[open_rows.pop()]
        row[2] = str(list(output.shape)) if isinstance(output, Tensor) else type(output).__name__

    for name, module in model.named_modules():
        depth = 0 if not name else name.count(".") + 1
        # nn.Identity stands for a layer the unit leaves out (e.g. v2's stem BN): not shown.
        if depth > max_depth or isinstance(module, nn.Identity):
            continue
        handles.append(module.register_forward_pre_hook(
            lambda m, i, name=name or type(model).__name__, depth=depth: pre_hook(m, i, name, depth)))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [tuple(r) for r in rows]


def summary_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-bench summary NAME`: layer-by-layer output shapes and parameters of one model."""
    p = Parser(prog="resnet-bench summary", description=summary_main.__doc__)
    p.add_argument("name", help="registered model name, e.g. resnet50_v2")
    p.add_argument("--image-size", type=_IMG, help="input height = width, pixels (default 224 ImageNet family, "
                                                   "32 CIFAR)")
    p.add_argument("--in-channels", type=_CHANNELS, default=3, help="input image channels")
    p.add_argument("--num-classes", type=_CLASSES, help="default 1000 ImageNet family, 10 CIFAR")
    p.add_argument("--unit", choices=UNITS, help="residual unit (default: by version)")
    p.add_argument("--stem", choices=STEMS, help="default: by family")
    p.add_argument("--width", type=_positive_int, help="base channels (default 64 ImageNet family, 16 CIFAR)")
    p.add_argument("--variant", choices=VARIANTS, default="modern", help="modern (default) or paper")
    p.add_argument("--depth", type=_DEPTH, default=3, help="deepest module level shown")
    p.add_argument("--json", action="store_true", help="print the layers and totals as one JSON document")
    p.add_renamed("--img", "--image-size")
    args = p.parse_args(argv)
    try:
        family = parse_model_name(args.name).family
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    imagenet = family == "imagenet" if args.stem is None else args.stem == "imagenet"
    img = args.image_size or (224 if imagenet else 32)
    num_classes = args.num_classes or (1000 if family == "imagenet" else 10)
    options = {k: v for k, v in (("unit", args.unit), ("stem", args.stem), ("width", args.width)) if v is not None}
    try:  # a unit that contradicts the name: one line, before building anything
        resolve_arch(args.name, variant=args.variant, unit=args.unit)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with torch.device("meta"):  # shapes only: any model, any size, no compute
        model = build_model(args.name, num_classes, args.in_channels, variant=args.variant, **options).eval()
    input_shape = (1, args.in_channels, img, img)
    rows = _layer_rows(model, torch.zeros(input_shape, device="meta"), args.depth)

    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = model_flops(model, input_shape)
    if args.json:
        from resnet_bench.console import print_json

        print_json({"model": args.name, "input_shape": list(input_shape), "params": total,
                    "trainable_params": trainable, "macs": flops // 2, "flops": flops,
                    "layers": [{"name": n, "type": t, "output_shape": sh, "params": pc, "depth": d}
                               for n, t, sh, pc, d in rows]})
        return 0
    name_w = max(len("  " * d + n) for n, _, _, _, d in rows) + 2
    type_w = max(len(t) for _, t, _, _, _ in rows) + 2
    header = f"{'Layer':<{name_w}}{'Type':<{type_w}}{'Output shape':<22}{'Param #':>12}"
    rule = "=" * len(header)
    print(rule)
    print(header)
    print(rule)
    for name, typ, shape, params, depth in rows:
        print(f"{'  ' * depth + name:<{name_w}}{typ:<{type_w}}{shape:<22}{params:>12,}")
    print(rule)
    print(f"Input shape: {list(input_shape)}")
    print(f"Total params: {total:,}  (trainable {trainable:,}, non-trainable {total - trainable:,})")
    print(f"Forward: {flops / 2e9:.3f} GMACs, {flops / 1e9:.3f} GFLOPs (FLOPs = 2 x MACs)")
    print(rule)
    return 0
