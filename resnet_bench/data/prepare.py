"""The `prepare` stage: one dataset from its raw source to its prepared artifact."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path


from resnet_bench.argparsing import Parser
from resnet_bench.data.artifact import (_decoder_versions, _write_arrays, build_artifact, check_out_dir,
                                        clean_leftovers, commit_artifact, content_sha256)
from resnet_bench.data.imagefolder import RESIZE_POLICY, write_imagefolder
from resnet_bench.data.readers import CIFAR_FILES, DIGITS_TEST_FRACTION, MNIST_FILES, read_cifar, read_digits, read_mnist
from resnet_bench.data.sources import DEFAULT_MAX_MEMBER_MB, DatasetError, _clean, verify_sha256
from resnet_bench.outputs import OutputError, check_can_create, out_path
from resnet_bench.vocab import DATASET_FORMATS as FORMATS
from resnet_bench.vocab import NAME_PATTERN

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


def prepare(name: str, fmt: str, *, source=None, sha256=None, download_data=False, out: Path,
            val_fraction=0.1, split_seed=0, image_size=None, workers: int | None = None,
            max_member_mb: float = DEFAULT_MAX_MEMBER_MB) -> dict:
    """Read a raw dataset and write its prepared artifact; returns the artifact's meta.

    Every check that needs no decoding (format, options, --out, source, checksum) runs first.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"--val-fraction: {val_fraction} is invalid: must be in [0, 1)")
    image_size = int(image_size) if image_size else None
    if image_size is not None and (image_size < 1 or fmt != "imagefolder"):
        raise DatasetError(f"image_size {image_size} is invalid for format {fmt!r}: a positive size applies "
                           "only to imagefolder (0 = keep the images' own size)")
    cap = int(max_member_mb * 2**20)
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
        if fmt == "imagefolder":
            meta = write_imagefolder(src_path, tmp, image_size=image_size, val_fraction=val_fraction,
                                     split_seed=split_seed, workers=workers or default_workers(), cap=cap)
        else:
            if fmt == "digits":
                raw = read_digits(split_seed)
            elif fmt in CIFAR_FILES:
                raw = read_cifar(src_path, fmt, cap)
            else:
                raw = read_mnist(src_path, fmt, cap)
            arrays, meta = build_artifact(*raw, val_fraction=val_fraction, split_seed=split_seed)
            _write_arrays(tmp, arrays)
            del arrays, raw
        resize = ({"policy": RESIZE_POLICY, "size": image_size, "filter": "bilinear (Pillow, antialiased)"}
                  if image_size else None)
        meta.update({"name": name, "format": fmt, "source": str(source) if src_path else
                     "sklearn.datasets.load_digits", "source_sha256": digest, "image_size": image_size,
                     "resize": resize, "decoders": _decoder_versions()})
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
                   help="imagefolder: shorter side to N, then centre crop N x N (0: keep the images' size)")
    p.add_argument("--workers", type=int, default=0,
                   help="decode processes (0: one per available core); the output does not depend on it")
    p.add_argument("--max-member-mb", type=float, default=DEFAULT_MAX_MEMBER_MB,
                   help=f"largest raw file or archive member read, MiB (default {DEFAULT_MAX_MEMBER_MB})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not re.fullmatch(NAME_PATTERN, args.name):
        print(f"error: --name: {args.name[:80]!r} is invalid: a dataset name is 1-64 of A-Z a-z 0-9 _ . - "
              "and does not start with . or -", file=sys.stderr)
        return 2
    try:
        out_path(args.out, "--out")  # the one way for every path flag: empty, NUL, over-long names refused
    except OutputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fmt = args.format or args.name
    if fmt not in FORMATS:
        print(f"error: unknown format {fmt!r} (from --name; pass --format); valid: {', '.join(FORMATS)}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        meta = prepare(args.name, fmt, source=args.source, sha256=args.sha256 or None,
                       download_data=args.download, out=Path(os.path.expanduser(args.out)),
                       val_fraction=args.val_fraction,
                       split_seed=args.split_seed, image_size=args.image_size, workers=args.workers or None,
                       max_member_mb=args.max_member_mb)
    except (DatasetError, OutputError) as err:
        print(f"error: {_clean(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permission denied: name the file, no traceback
        print(f"error: {_clean(err.strerror or err)}: {err.filename or args.out}", file=sys.stderr)
        return 1
    c = meta["counts"]
    print(f"prepared {args.name} ({fmt}): {c['train']} train / {c['val']} val / {c['test']} test, "
          f"{meta['channels']}x{meta['height']}x{meta['width']}, {meta['num_classes']} classes -> {args.out} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
