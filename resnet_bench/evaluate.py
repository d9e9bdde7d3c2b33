"""`resnet-bench evaluate`: a stored model's accuracy, rebuilt from its own file (no training).

The network is built from the file's metadata (its cell's config; resnet_bench.models.files) and
evaluated as the cell's final test pass did: the cell's numeric pin set in this process before torch
computes (deterministic CPU), its thread count, its batch size, the split in order, normalised with the
prepared dataset's mean and std, channels_last / compile / AMP as the cell's runtime says, the same
reduction (resnet_bench.train.evaluate). On the deterministic CPU path the record's `test_acc` and
`test_loss` come out equal as floats.
"""

from __future__ import annotations

import sys
from pathlib import Path

SPLITS = ("test", "val")


def pin_for(cell) -> None:
    """The cell's numeric environment in this process, before any tensor is computed."""
    from resnet_bench.train import pin_numeric_environment

    pin_numeric_environment(cell)


def recorded(mf) -> dict:
    """What the file's weights scored when trained: test accuracy and loss."""
    return {"test_acc": mf.metrics.get("test_acc"), "test_loss": mf.metrics.get("test_loss")}


def evaluate_model_file(mf, prepared_dir: Path, *, dataset: str | None = None, split: str = "test",
                        device: str | None = None) -> dict:
    """Accuracy and loss of a validated model file (`read_model_file`) on a prepared split.

    Returns `{"acc", "loss", "top5_acc", "n", "dataset", "split", "device", "same_data"}`; `same_data`:
    the prepared dataset is the one the cell trained on (its content hash), so the record's numbers apply.
    """
    import torch

    from resnet_bench import config as cfg
    from resnet_bench import runtime as rt
    from resnet_bench.inputs import read_json
    from resnet_bench.models.files import build_network
    from resnet_bench.train import _loaders, evaluate

    cell = mf.cell
    name = dataset or cell.dataset
    meta = read_json(Path(prepared_dir) / name / "meta.json")
    if (meta.get("num_classes"), meta.get("channels")) != (mf.num_classes, mf.in_channels):
        raise cfg.ConfigError(f"--dataset: {name} has {meta.get('num_classes')} classes and {meta.get('channels')} "
                              f"channel(s); the model {mf.path.name} takes {mf.in_channels} channel(s) and predicts "
                              f"{mf.num_classes} classes")
    runtime = cell.runtime
    dev = torch.device(device or runtime.device)
    if runtime.device == "cpu" and runtime.threads:
        torch.set_num_threads(runtime.threads)
    rt.set_determinism(runtime.deterministic, dev)
    rt.set_tf32(runtime.tf32)
    # The cell's loaders (batch size, order, normalisation from the prepared meta), of the dataset asked.
    loaders = _loaders(cell.model_copy(update={"dataset": name}), Path(prepared_dir), dev)
    val_loader, test_loader, meta = loaders[1], loaders[2], loaders[3]  # (train, val, test, meta[, notes])
    loader = test_loader if split == "test" else val_loader
    model = build_network(mf).to(dev)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    compiled = rt.Compiled(model, enabled=runtime.compile, mode=runtime.compile_mode)
    topk = 5 if mf.num_classes >= 100 else 1
    out = evaluate(compiled, loader, runtime, dev, topk=topk)
    same = cell.data is not None and meta.get("content_sha256") == cell.data.content_sha256
    return {"acc": out["acc"], "loss": out["loss"], "top5_acc": out.get("top5_acc"), "n": len(loader.y),
            "dataset": name, "split": split, "device": str(dev), "same_data": same}


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench evaluate", description="A stored model's accuracy, from its own file.")
    p.add_argument("--weights", required=True, help="a model file (results/<experiment>/cells/<cell_id>.safetensors)")
    p.add_argument("--dataset", help="a prepared dataset under --prepared-dir (default: the one the cell trained on)")
    p.add_argument("--split", default="test", help=f"{' or '.join(SPLITS)} (default test)")
    p.add_argument("--prepared-dir", default="data/prepared", help="folder of prepared datasets")
    p.add_argument("--device", help="cpu or cuda (default: the cell's device; cpu where it has no GPU)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import re

    from resnet_bench import config as cfg
    from resnet_bench.data.sources import DatasetError
    from resnet_bench.inputs import InputError, user_path
    from resnet_bench.models.files import read_model_file
    from resnet_bench.vocab import DATASET_NAME_PATTERN

    args = parse_args(argv)
    try:
        if args.split not in SPLITS:
            raise cfg.ConfigError(f"--split: {args.split[:40]!r} is invalid; valid: {', '.join(SPLITS)}")
        if args.device is not None and args.device not in ("cpu", "cuda"):
            raise cfg.ConfigError(f"--device: {args.device[:40]!r} is invalid; valid: cpu, cuda")
        prepared = user_path(args.prepared_dir, "--prepared-dir")
        if args.dataset is not None:
            available = sorted(p.name for p in prepared.glob("*") if (p / "meta.json").is_file())
            if not re.fullmatch(DATASET_NAME_PATTERN, args.dataset) or args.dataset not in available:
                raise cfg.ConfigError(f"--dataset: {args.dataset[:80]!r} is not prepared under {prepared}; prepared: "
                                      f"{', '.join(available) or '(none)'}")
        mf = read_model_file(user_path(args.weights, "--weights"), before_tensors=pin_for)
        device = args.device or mf.cell.runtime.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                if args.device:
                    raise cfg.ConfigError("--device: cuda, but this machine has no CUDA GPU; valid here: cpu")
                print("[evaluate] the cell trained on cuda; this machine has no GPU: evaluating on cpu (not "
                      "bit-comparable with the record)", file=sys.stderr)
                device = "cpu"
        name = args.dataset or mf.cell.dataset
        if not (prepared / name / "meta.json").is_file():
            raise cfg.ConfigError(f"{mf.path}: its dataset {name!r} is not prepared under {prepared}; prepare it "
                                  "(`dvc repro` or `dvc pull`) or give --dataset")
        result = evaluate_model_file(mf, prepared, dataset=args.dataset, split=args.split, device=device)
    except (cfg.ConfigError, InputError, DatasetError) as err:
        print("\n".join(f"error: {line}" for line in getattr(err, "problems", [str(err)])), file=sys.stderr)
        return 2
    line = (f"{mf.path}: {mf.cell.label()} {mf.kind} (epoch {mf.epoch}) on {result['dataset']} {result['split']} "
            f"({result['n']} images, {result['device']}): acc {result['acc']!r} loss {result['loss']!r}"
            + (f" top5_acc {result['top5_acc']!r}" if result["top5_acc"] is not None else ""))
    want = recorded(mf)
    if result["split"] == "test" and result["same_data"] and want["test_acc"] is not None:
        same = result["acc"] == want["test_acc"] and result["loss"] == want["test_loss"]
        line += (f"; recorded test_acc {want['test_acc']!r} test_loss {want['test_loss']!r}: "
                 f"{'identical' if same else 'differs'}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
