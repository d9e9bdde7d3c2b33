"""The `prepare` stage: one dataset from its raw source to its prepared artifact."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.argparsing import Parser
from resnet_bench.data.artifact import (_decoder_versions, _write_arrays, build_artifact, check_out_dir,
                                        clean_leftovers, commit_artifact, content_sha256)
from resnet_bench.data.images import StorePolicy, write_images
from resnet_bench.data.readers import imagefolder, imagenet, imagenet_downsampled, tinyimagenet
from resnet_bench.data.readers.cifar import CIFAR_FILES, read_cifar
from resnet_bench.data.readers.digits import DIGITS_TEST_FRACTION, read_digits
from resnet_bench.data.readers.mnist import MNIST_FILES, read_mnist
from resnet_bench.data.sources import DEFAULT_MAX_MEMBER_MB, DatasetError, _clean, verify_sha256
from resnet_bench.inputs import path_problem
from resnet_bench.outputs import OutputError, check_can_create, disk_full_message, is_disk_full, out_path
from resnet_bench.vocab import DATASET_FORMATS as FORMATS
from resnet_bench.vocab import DATASET_NAME_PATTERN, IMAGE_FORMATS

IMAGE_READERS = {"imagefolder": imagefolder.read, "imagenet": imagenet.read, "tinyimagenet": tinyimagenet.read}
# A format whose largest official member exceeds the default cap.
FORMAT_MAX_MEMBER_MB = {"imagenet_downsampled": imagenet_downsampled.MAX_MEMBER_MB}

def require_source(path: str | Path | None, fmt: str) -> Path:
    """The source path, or a DatasetError naming the expected path and how to provide it."""
    how = {
        "cifar10": f"download {CIFAR_FILES['cifar10']} (run prepare with --download when online) and "
                   "`dvc add` it",
        "cifar100": f"download {CIFAR_FILES['cifar100']} (run prepare with --download when online) and "
                    "`dvc add` it",
        "mnist": f"put {', '.join(MNIST_FILES.values())} in a folder (or use --download when online) and "
                 "`dvc add` the folder",
        "imagefolder": "put the archive (.tar.gz/.tgz/.zip) or folder there and `dvc add` it",
        "imagenet": f"put {', '.join(imagenet.FILES.values())} (from image-net.org) in one folder and `dvc add` it",
        "tinyimagenet": "put tiny-imagenet-200.zip there and `dvc add` it",
        "imagenet_downsampled": "put the release's zips (e.g. Imagenet32_train.zip, Imagenet32_val.zip, from "
                                "image-net.org) in one folder and `dvc add` it",
    }
    how["fashion_mnist"] = how["mnist"]
    if path is None or str(path) == "":
        raise DatasetError(f"format {fmt!r} needs --source PATH: {how.get(fmt, '')}")
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"source not found: {p} (expected the {fmt} data there); to provide it: "
                           f"{how.get(fmt, '')} (docs/datasets.md)")
    problem = path_problem(p, folder_ok=True)  # /dev/zero, a FIFO, a socket: refused before it is opened
    if problem:
        raise DatasetError(f"source {problem}")
    return p


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def store_policy(fmt: str, image_size, eval_resize, eval_crop, max_aspect) -> StorePolicy:
    """The validated store policy; one DatasetError naming every bad setting (before any work)."""
    sizes = {"image_size": image_size or 0, "eval_resize": eval_resize or 0, "eval_crop": eval_crop or 0}
    problems = [f"{k} {v} is invalid: a size in pixels, 0..4096 (0: see docs/datasets.md)"
                for k, v in sizes.items() if not (isinstance(v, int) and 0 <= v <= 4096)]
    if fmt not in IMAGE_FORMATS and any(sizes.values()):
        given = ", ".join(f"{k} {v}" for k, v in sizes.items() if v)
        problems.append(f"{given} is invalid for format {fmt!r}: sizes apply only to the image formats "
                        f"({', '.join(IMAGE_FORMATS)}) (0 = keep the images' own size)")
    if not problems:
        policy = StorePolicy(**sizes, max_aspect=float(max_aspect))
        problems += policy.problems()
    if problems:
        raise DatasetError("; ".join(problems))
    return policy


def member_cap_mb(fmt: str, max_member_mb: float | None) -> float:
    """The largest raw member `prepare` reads for `fmt`, MiB: the flag's, else the format's own cap."""
    return max_member_mb or FORMAT_MAX_MEMBER_MB.get(fmt, DEFAULT_MAX_MEMBER_MB)


def prepare(name: str, fmt: str, *, source=None, sha256=None, download_data=False, out: Path,
            val_fraction: float | None = None, split_seed: int | None = None, image_size=None, eval_resize=None,
            eval_crop=None, max_aspect: float = 1.0, workers: int | None = None,
            max_member_mb: float | None = None) -> dict:
    """Read a raw dataset and write its prepared artifact; returns the artifact's meta.

    Every check that needs no decoding (format, options, --out, source, checksum) runs first.
    Unset values are the schema's defaults (resnet_bench.config: PrepareParams, PrepareRun).
    """
    out = Path(out)
    val_fraction = cfg.PrepareParams().val_fraction if val_fraction is None else val_fraction
    split_seed = cfg.PrepareParams().split_seed if split_seed is None else split_seed
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"--val-fraction: {val_fraction} is invalid: must be in [0, 1)")
    policy = store_policy(fmt, image_size, eval_resize, eval_crop, max_aspect)
    mb = member_cap_mb(fmt, max_member_mb)
    cap = int(mb * 2**20)
    if cap < 1:
        raise DatasetError(f"--max-member-mb must be positive, got {max_member_mb}")
    src_path = None
    if fmt != "digits":
        if download_data and (source is None or not Path(source).exists()):
            source = download(fmt, Path(source or Path("data") / "raw"))
        src_path = require_source(source, fmt)
    check_out_dir(out, src_path)
    check_can_create(out.parent, "--out")  # the output policy: writable before any decoding
    clean_leftovers(out)
    digest = verify_sha256(src_path, sha256) if src_path else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if fmt in IMAGE_READERS:
            index, stream = IMAGE_READERS[fmt](src_path, cap)
            meta = write_images(index, stream, source=str(src_path), tmp=tmp, policy=policy,
                                val_fraction=val_fraction, split_seed=split_seed,
                                workers=workers or default_workers())
        elif fmt == "imagenet_downsampled":
            meta = imagenet_downsampled.write_downsampled(src_path, tmp, val_fraction=val_fraction,
                                                          split_seed=split_seed, cap=cap)
            meta["resize"] = None
        else:
            if fmt == "digits":
                raw = read_digits(split_seed)
            elif fmt in CIFAR_FILES:
                raw = read_cifar(src_path, fmt, cap)
            else:
                raw = read_mnist(src_path, fmt, cap)
            arrays, meta = build_artifact(*raw, val_fraction=val_fraction, split_seed=split_seed)
            _write_arrays(tmp, arrays)
            meta["resize"] = None
            del arrays, raw
        meta.update({"name": name, "format": fmt, "source": str(source) if src_path else
                     "sklearn.datasets.load_digits", "source_sha256": digest, "image_size": policy.image_size or None,
                     "decoders": _decoder_versions()})
        if fmt == "digits":
            meta["split"]["test"] = {"fraction": DIGITS_TEST_FRACTION, "seed": split_seed + 1_000_003,
                                     "stratified": True}
        meta["content_sha256"] = content_sha256(tmp, meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        commit_artifact(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def download(fmt: str, root: Path) -> Path:
    """Fetch the official files through torchvision (online users); returns the source path."""
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    if fmt in CIFAR_FILES:
        (tvd.CIFAR10 if fmt == "cifar10" else tvd.CIFAR100)(str(root), download=True)
        return root / CIFAR_FILES[fmt]
    if fmt in ("mnist", "fashion_mnist"):
        (tvd.MNIST if fmt == "mnist" else tvd.FashionMNIST)(str(root), download=True)
        return root
    raise DatasetError(f"--download is not available for format {fmt!r}; valid: "
                       f"{', '.join([*CIFAR_FILES, 'mnist', 'fashion_mnist'])}")


# ---- entry point ----------------------------------------------------------------------------------

# Flags, by the schema key whose limits they take (one-line errors name the flag).
FLAGS = {"val_fraction": "--val-fraction", "split_seed": "--split-seed", "image_size": "--image-size",
         "eval_resize": "--eval-resize", "eval_crop": "--eval-crop", "max_aspect": "--max-aspect",
         "sha256": "--sha256", "source": "--source", "format": "--format", "workers": "--workers",
         "max_member_mb": "--max-member-mb"}
# What --params supplies from params.yaml; giving them as flags too would be two truths.
DATASET_FLAGS = ("format", "source", "sha256", "image_size", "eval_resize", "eval_crop", "max_aspect",
                 "val_fraction", "split_seed")


def parse_args(argv):
    split, run = cfg.PrepareParams(), cfg.PrepareRun()  # the defaults, for the help text
    p = Parser(prog="resnet-bench prepare", description="Prepare one dataset artifact.")
    p.add_argument("--params", help="take the dataset's settings from this params file's `prepare:` section; the "
                   "dataset is --name, or, run by DVC, its stage's (prepare@NAME, prepare_file@NAME in $DVC_STAGE); default: none, the "
                   "flags below")
    p.add_argument("--name", help="artifact name, e.g. digits, cifar10_jpeg (a dataset of --params, if given; "
                                  "default: the DVC stage's)")
    p.add_argument("--format", choices=FORMATS, help="defaults to --name when that is a format")
    p.add_argument("--source", help="file or folder with the raw data (default: --params' entry; none for "
                                    "the built-in datasets)")
    p.add_argument("--sha256", help="expected SHA-256 of the source file (default: no check)")
    p.add_argument("--download", action="store_true", help="fetch the official files (needs internet)")
    p.add_argument("--out", help="a folder: the artifact (default with --params: data/prepared/NAME); must be absent, "
                   "empty or a previous artifact")
    p.add_argument("--val-fraction", type=float,
                   help=f"of train, held out for model selection (default {split.val_fraction})")
    p.add_argument("--split-seed", type=int,
                   help=f"seed of the stratified validation split (default {split.split_seed})")
    p.add_argument("--image-size", type=int,
                   help="image formats: train images' shorter side to N, aspect kept up to --max-aspect "
                        "(default 0: keep the images' size)")
    p.add_argument("--max-aspect", type=float,
                   help="with --image-size: longest side kept, as a multiple of the shorter (default 1: centre "
                        "square)")
    p.add_argument("--eval-resize", type=int,
                   help="val/test images' shorter side to N (default 0: --image-size, or keep the size)")
    p.add_argument("--eval-crop", type=int,
                   help="then the centre N x N (default 0: the resized square; keep the size when nothing is "
                        "resized)")
    p.add_argument("--workers", type=int, help=f"decode processes (default {run.workers}: one per available core); "
                   "the output does not depend on it")
    p.add_argument("--max-member-mb", type=float,
                   help=f"largest raw file or archive member read, MiB (default: {DEFAULT_MAX_MEMBER_MB}, "
                        f"{FORMAT_MAX_MEMBER_MB['imagenet_downsampled']} for imagenet_downsampled)")
    return p.parse_args(argv)


def _dataset_of_stage(stage: str | None, params: cfg.Params, label: str) -> str:
    """The dataset DVC is preparing: `prepare@NAME` (prepare.builtin) or `prepare_file@NAME`
    (prepare.files) from $DVC_STAGE, which DVC sets for every command it runs
    (`dvc.yaml:` prefixed when dvc.yaml is not at the root). The name never reaches a shell."""
    base, _, name = (stage or "").rpartition(":")[2].partition("@")
    prep = params.prepare
    if (base == "prepare" and name in prep.builtin) or (base == "prepare_file" and name in prep.files):
        return name
    if not stage:
        raise cfg.ConfigError(f"--params {label} needs --name (one of {', '.join(prep.dataset_names())}) when "
                              "not run by DVC ($DVC_STAGE unset)")
    raise cfg.ConfigError(f"$DVC_STAGE {stage[:80]!r} is not the prepare stage of a dataset of {label}; valid: "
                          + ", ".join([*(f"prepare@{n}" for n in prep.builtin),
                                       *(f"prepare_file@{n}" for n in prep.files)]))


def job_from_params(args) -> dict:
    """prepare()'s arguments from params.yaml (validated as a whole by the schema, as the sweep does)."""
    given = [FLAGS[k] for k in DATASET_FLAGS if getattr(args, k) is not None]
    if given or args.download:
        raise cfg.ConfigError(f"--params takes the dataset's settings from {args.params}; drop "
                              f"{', '.join(given or ['--download'])} (or drop --params to give them all as flags)")
    params = cfg.load_params(args.params)
    name = args.name or _dataset_of_stage(os.environ.get("DVC_STAGE"), params, args.params)
    prep = params.prepare
    if name in prep.builtin:
        job = {"fmt": name, "source": None, "sha256": None, "image_size": None, "eval_resize": None,
               "eval_crop": None, "max_aspect": 1.0}
    elif name in prep.files:
        f = prep.files[name]
        job = {"fmt": f.format, "source": f.source, "sha256": f.sha256 or None, "image_size": f.image_size,
               "eval_resize": f.eval_resize, "eval_crop": f.eval_crop, "max_aspect": f.max_aspect}
    else:
        raise cfg.ConfigError(f"--name: {name[:80]!r} is not a dataset of {args.params}; valid: "
                              f"{', '.join(prep.dataset_names())} (prepare.builtin and prepare.files)")
    return {**job, "name": name, "out": out_path(args.out or Path("data") / "prepared" / name, "--out"),
            "val_fraction": prep.val_fraction, "split_seed": prep.split_seed, "download_data": False}


def job_from_flags(args) -> dict:
    """prepare()'s arguments from flags, through the same schema limits as params.yaml."""
    problems = []

    def check(model, values: dict):
        try:
            return cfg.validate_flags(model, values, FLAGS)
        except cfg.ConfigError as err:
            problems.extend(err.problems)

    if not args.name:
        problems.append("--name is required (or --params)")
    elif not re.fullmatch(DATASET_NAME_PATTERN, args.name):
        problems.append(f"--name: {args.name[:80]!r} is invalid: a dataset name is 1-64 letters, digits, '_' or '-'"
                        ", not starting with '-'")
    fmt = args.format or args.name
    if args.name and fmt not in FORMATS and not problems:
        problems.append(f"unknown format {fmt!r} (from --name; pass --format); valid: {', '.join(FORMATS)}")
    if args.out is None:
        problems.append("--out is required (or --params)")
    # By hand, --val-fraction 0 (nothing held out) is allowed; params.yaml needs a validation split.
    no_holdout = args.val_fraction == 0
    split = check(cfg.PrepareParams, {"val_fraction": None if no_holdout else args.val_fraction,
                                      "split_seed": args.split_seed})
    if fmt in FORMATS:
        # The limits of a params.yaml entry; whether the source exists, and how to provide it, is
        # prepare()'s check.
        check(cfg.DatasetFile, {"format": fmt, "source": args.source or "(not given)", "sha256": args.sha256 or "",
                                "image_size": args.image_size or 0, "eval_resize": args.eval_resize or 0,
                                "eval_crop": args.eval_crop or 0,
                                "max_aspect": 1.0 if args.max_aspect is None else args.max_aspect})
    if problems:
        raise cfg.ConfigError(problems)
    return {"name": args.name, "fmt": fmt, "source": args.source, "sha256": args.sha256 or None,
            "image_size": args.image_size, "eval_resize": args.eval_resize, "eval_crop": args.eval_crop,
            "max_aspect": 1.0 if args.max_aspect is None else args.max_aspect,
            # the one way for every path flag: `~` expanded, empty, NUL and over-long names refused
            "out": out_path(args.out, "--out") if args.out is not None else None,
            "val_fraction": 0.0 if no_holdout else split.val_fraction, "split_seed": split.split_seed,
            "download_data": args.download}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        job = job_from_params(args) if args.params else job_from_flags(args)
        run = cfg.validate_flags(cfg.PrepareRun, {"workers": args.workers, "max_member_mb": args.max_member_mb},
                                 FLAGS)
    except (cfg.ConfigError, OutputError) as err:
        print("\n".join(f"error: {line}" for line in getattr(err, "problems", [str(err)])), file=sys.stderr)
        return 2
    name, fmt, out = job.pop("name"), job.pop("fmt"), job["out"]
    t0 = time.perf_counter()
    try:
        meta = prepare(name, fmt, **job, workers=run.workers or None, max_member_mb=run.max_member_mb)
    except (DatasetError, OutputError) as err:
        print(f"error: {_clean(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permission denied: name the file, no traceback
        where = err.filename or out
        line = disk_full_message(where, "the prepared dataset") if is_disk_full(err) else \
            f"{_clean(err.strerror or err)}: {where}"
        print(f"error: {line}", file=sys.stderr)
        return 1
    c, shapes = meta["counts"], meta["shapes"]
    print(f"prepared {name} ({fmt}): {c['train']} train / {c['val']} val / {c['test']} test, train "
          f"{'x'.join(map(str, shapes['train']))}, val/test {'x'.join(map(str, shapes['test']))}, "
          f"{meta['num_classes']} classes -> {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
