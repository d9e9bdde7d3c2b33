"""The `prepare` stage: one dataset from its raw source to its prepared artifact."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from resnet_bench.argparsing import Parser
from resnet_bench.data.artifact import (_decoder_versions, _write_arrays, build_artifact, check_out_dir,
                                        clean_leftovers, commit_artifact, content_sha256)
from resnet_bench.data.images import StorePolicy, write_images
from resnet_bench.data.readers import imagefolder, imagenet, imagenet_downsampled, tinyimagenet
from resnet_bench.data.readers.cifar import CIFAR_FILES, read_cifar
from resnet_bench.data.readers.digits import DIGITS_TEST_FRACTION, read_digits
from resnet_bench.data.readers.mnist import MNIST_FILES, read_mnist
from resnet_bench.data.sources import DEFAULT_MAX_MEMBER_MB, DatasetError, _clean, verify_sha256
from resnet_bench.vocab import DATASET_FORMATS as FORMATS
from resnet_bench.vocab import IMAGE_FORMATS

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
    return p


def available_formats() -> list[str]:
    return list(FORMATS)


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


def prepare(name: str, fmt: str, *, source=None, sha256=None, download_data=False, out: Path,
            val_fraction=0.1, split_seed=0, image_size=None, eval_resize=None, eval_crop=None,
            max_aspect: float = 1.0, workers: int | None = None, max_member_mb: float | None = None) -> dict:
    """Read a raw dataset and write its prepared artifact; returns the artifact's meta.

    Every check that needs no decoding (format, options, --out, source, checksum) runs first.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"--val-fraction: {val_fraction} is invalid: must be in [0, 1)")
    policy = store_policy(fmt, image_size, eval_resize, eval_crop, max_aspect)
    mb = max_member_mb or FORMAT_MAX_MEMBER_MB.get(fmt, DEFAULT_MAX_MEMBER_MB)
    cap = int(mb * 2**20)
    if cap < 1:
        raise DatasetError(f"--max-member-mb must be positive, got {max_member_mb}")
    src_path = None
    if fmt != "digits":
        if download_data and (source is None or not Path(source).exists()):
            source = download(fmt, Path(source or Path("data") / "raw"))
        src_path = require_source(source, fmt)
    check_out_dir(out, src_path)
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


def parse_args(argv):
    p = Parser(prog="resnet-bench prepare", description="Prepare one dataset artifact.")
    p.add_argument("--name", required=True, help="artifact name, e.g. digits, cifar10_jpeg")
    p.add_argument("--format", choices=FORMATS, help="defaults to --name when that is a format")
    p.add_argument("--source", help="file or folder with the raw data")
    p.add_argument("--sha256", default="", help="expected SHA-256 of the source file (empty: no check)")
    p.add_argument("--download", action="store_true", help="fetch the official files (needs internet)")
    p.add_argument("--out", required=True, help="artifact folder, e.g. data/prepared/digits; must be absent, "
                   "empty or a previous artifact")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=0,
                   help="image formats: train images' shorter side to N, aspect kept up to --max-aspect "
                        "(0: keep the images' size)")
    p.add_argument("--max-aspect", type=float, default=1.0,
                   help="with --image-size: longest side kept, as a multiple of the shorter (1: centre square)")
    p.add_argument("--eval-resize", type=int, default=0,
                   help="val/test images' shorter side to N (0: --image-size, or keep the size)")
    p.add_argument("--eval-crop", type=int, default=0,
                   help="then the centre N x N (0: the resized square; keep the size when nothing is resized)")
    p.add_argument("--workers", type=int, default=0,
                   help="decode processes (0: one per available core); the output does not depend on it")
    p.add_argument("--max-member-mb", type=float, default=0,
                   help=f"largest raw file or archive member read, MiB (0: {DEFAULT_MAX_MEMBER_MB}, "
                        f"{FORMAT_MAX_MEMBER_MB['imagenet_downsampled']} for imagenet_downsampled)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    fmt = args.format or args.name
    if fmt not in FORMATS:
        print(f"error: unknown format {fmt!r} (from --name; pass --format); valid: {', '.join(FORMATS)}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        meta = prepare(args.name, fmt, source=args.source, sha256=args.sha256 or None,
                       download_data=args.download, out=Path(args.out), val_fraction=args.val_fraction,
                       split_seed=args.split_seed, image_size=args.image_size, eval_resize=args.eval_resize,
                       eval_crop=args.eval_crop, max_aspect=args.max_aspect, workers=args.workers or None,
                       max_member_mb=args.max_member_mb or None)
    except DatasetError as err:
        print(f"error: {_clean(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permission denied: name the file, no traceback
        print(f"error: {_clean(err.strerror or err)}: {err.filename or args.out}", file=sys.stderr)
        return 1
    c, shapes = meta["counts"], meta["shapes"]
    print(f"prepared {args.name} ({fmt}): {c['train']} train / {c['val']} val / {c['test']} test, train "
          f"{'x'.join(map(str, shapes['train']))}, val/test {'x'.join(map(str, shapes['test']))}, "
          f"{meta['num_classes']} classes -> {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
