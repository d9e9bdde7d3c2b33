"""`resnet-bench export`: a stored model's state dict under the names of the library whose network it is.

- `_v1` models -> torchvision `resnet{18,34,50,101,152}`: our module names are torchvision's, the tensors
  go as they are (`torchvision.models.resnet50(num_classes=K).load_state_dict(sd, strict=True)`).
- `_v2` models -> timm `resnetv2_{18,34,50,101,152}`: the inverse of `interop.convert_timm_resnetv2`
  (`timm.create_model("resnetv2_50", pretrained=False, num_classes=K, in_chans=C)`); the classifier
  becomes timm's 1x1 conv (K x C x 1 x 1).

Only networks that exist in the other library map exactly: the `modern` variant with the ImageNet
stem, projection shortcuts, the stride on the bottleneck's 3x3 conv, base width 64, the unit of its
version, a depth torchvision/timm build, and (torchvision) 3 input channels. Anything else (the
`paper` variant, zero-pad shortcuts, the CIFAR stem, the ablation units, a narrow width) is refused
with one line saying why: there is no such network there to load it into.

The output is a safetensors file (no pickle), written through the output policy.
"""

from __future__ import annotations

import json
import re
import sys

LIBRARIES = ("torchvision", "timm")
DEPTHS = (18, 34, 50, 101, 152)
EXPORT_KEY = "resnet_bench.exported_from"

def export_problem(cell, library: str, in_channels: int) -> str | None:
    """Why `cell`'s network has no exact counterpart in `library` (None: it has one)."""
    from resnet_bench.models.registry import parse_model_name, resolve_arch

    name = parse_model_name(cell.model)
    want = "torchvision" if name.version == "v1" else "timm"
    if library != want:
        return (f"{cell.model} is a {name.version} network: it exports to {want} "
                f"({'resnet' if want == 'torchvision' else 'resnetv2_'}{name.depth}), not {library}")
    arch = resolve_arch(cell.model, variant=cell.arch.variant, unit=cell.unit, shortcut=cell.arch.shortcut,
                        bottleneck_stride=cell.arch.bottleneck_stride)
    why = []
    if name.depth not in DEPTHS:
        why.append(f"depth {name.depth} (it builds {', '.join(map(str, DEPTHS))})")
    if cell.arch.variant != "modern":
        why.append(f"variant {cell.arch.variant!r} (the papers' networks; only 'modern' is theirs)")
    if cell.unit != ("original" if name.version == "v1" else "full_preact"):
        why.append(f"unit {cell.unit!r}")
    if cell.arch.stem != "imagenet":
        why.append(f"stem {cell.arch.stem!r} (it has the ImageNet stem only)")
    if arch["shortcut"] != "projection":
        why.append(f"shortcut {arch['shortcut']!r} (it has projection shortcuts only)")
    if arch["bottleneck_stride"] != "3x3":
        why.append(f"bottleneck_stride {arch['bottleneck_stride']!r}")
    if cell.arch.width not in (None, 64):
        why.append(f"width {cell.arch.width} (it builds width 64)")
    if library == "torchvision" and in_channels != 3:
        why.append(f"{in_channels} input channel(s) (torchvision's ResNets take 3)")
    if why:
        return f"{cell.model} with {', '.join(why)} has no counterpart in {library}: nothing there would load it"
    return None


def to_timm(state_dict: dict) -> dict:
    """Our `_v2` state dict under timm resnetv2 names (interop.convert_timm_resnetv2 reverses it)."""
    out = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(r"layer(\d+)\.(\d+)\.(bn|conv)(\d)\.(\w+)", key):
            stage, block, kind, i, leaf = m.groups()
            new = f"stages.{int(stage) - 1}.blocks.{block}.{'norm' if kind == 'bn' else 'conv'}{i}.{leaf}"
        elif m := re.fullmatch(r"layer(\d+)\.(\d+)\.downsample\.weight", key):
            new = f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.downsample.conv.weight"
        elif key == "conv1.weight":
            new = "stem.conv.weight"
        elif m := re.fullmatch(r"bn_final\.(\w+)", key):
            new = f"norm.{m.group(1)}"
        elif m := re.fullmatch(r"fc\.(weight|bias)", key):
            new = f"head.fc.{m.group(1)}"
        else:
            raise ValueError(f"unexpected key {key!r}: not a modern _v2 model's state dict")
        # timm's classifier is a 1x1 conv on the pooled features: K x C -> K x C x 1 x 1.
        out[new] = value[:, :, None, None] if new == "head.fc.weight" else value
    return out


def exported(mf, library: str) -> tuple[dict, dict, str]:
    """(state dict under `library`'s names, file metadata, the line that builds the network there)."""
    from resnet_bench.models.files import ModelFileError, build_network
    from resnet_bench.models.registry import parse_model_name

    problem = export_problem(mf.cell, library, mf.in_channels)
    if problem:
        raise ModelFileError(f"--to {library}: {problem}")
    state = build_network(mf).state_dict()  # checked against the network, strictly
    depth = parse_model_name(mf.cell.model).depth
    if library == "torchvision":
        name, tensors = f"resnet{depth}", dict(state)
        build = f"torchvision.models.{name}(num_classes={mf.num_classes})"
    else:
        name, tensors = f"resnetv2_{depth}", to_timm(state)
        build = (f"timm.create_model({name!r}, pretrained=False, num_classes={mf.num_classes}"
                 + (f", in_chans={mf.in_channels}" if mf.in_channels != 3 else "") + ")")
    metadata = {EXPORT_KEY: mf.cell.cell_id, "resnet_bench.library": library, "resnet_bench.model": name,
                "resnet_bench.build": build, "resnet_bench.kind": mf.kind,
                "resnet_bench.dataset": json.dumps(mf.dataset, sort_keys=True)}
    return {k: v.contiguous() for k, v in tensors.items()}, metadata, build


def _is_our_export(path) -> bool:
    """An existing --out file export may replace: a safetensors file an export wrote (its metadata says so)."""
    import struct

    from resnet_bench.inputs import InputError, open_regular

    try:
        with open_regular(path) as f:
            head = f.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            if not 0 < n <= 2**24:
                return False
            header = json.loads(f.read(n))
    except (InputError, OSError, ValueError):
        return False
    return isinstance(header, dict) and EXPORT_KEY in (header.get("__metadata__") or {})


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench export", description="A stored model's weights under torchvision's or timm's names.")
    p.add_argument("--weights", required=True, help="a model file (results/<experiment>/cells/<cell_id>.safetensors)")
    p.add_argument("--to", required=True, help=f"{' or '.join(LIBRARIES)} (v1 -> torchvision, v2 -> timm)")
    p.add_argument("--out", required=True, help="the safetensors file to write (a file; an existing one is replaced only if export wrote it)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from safetensors.torch import save

    from resnet_bench.inputs import InputError, user_path
    from resnet_bench.models.files import read_model_file
    from resnet_bench.outputs import OutputError, OutputFile

    args = parse_args(argv)
    try:
        if args.to not in LIBRARIES:
            raise InputError(f"--to: {args.to[:40]!r} is invalid; valid: {', '.join(LIBRARIES)}")
        out = OutputFile(args.out, writer="export", flag="--out", ours=_is_our_export).prepare()
        mf = read_model_file(user_path(args.weights, "--weights"))
        tensors, metadata, build = exported(mf, args.to)
        path = out.write_bytes(save(tensors, metadata=metadata))
    except (InputError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{path}: {mf.cell.label()} ({mf.kind}) as {args.to} {metadata['resnet_bench.model']}, {len(tensors)} "
          f"tensors; load it with\n  model = {build}\n  model.load_state_dict(safetensors.torch.load_file"
          f"({str(path)!r}), strict=True)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
