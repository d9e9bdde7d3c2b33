"""The ImageNet-style loader at 224 px against torchvision's pipeline on the same images, images/s.

Both produce shuffled, normalised float32 batches of 256 with random-resized crops to 224 x 224
(scale 0.08-1, ratio 3/4-4/3) and a horizontal flip, for one full pass (epoch); no model. Timed
region: first batch request to last batch in hand; the variants run interleaved, repeat after repeat
(a first pass of each is a warm-up).

- resnet_bench: the image folder prepared once (`resnet-bench prepare --image-size 256 --max-aspect
  1.3333 --eval-resize 256 --eval-crop 224`: train images stored at shorter side 256, aspect kept),
  then `DeviceLoader` on the CPU, streaming from the memory-mapped store through its ring: inline with
  2 torch threads (the CPU default), with 1 torch thread and its prefetch thread, and the batched float
  form the GPU uses (for reference); the ATen uint8 antialiased resize per box on CPU.
- torchvision: `ImageFolder` + `RandomResizedCrop(224)` + `RandomHorizontalFlip` + `ToTensor` +
  `Normalize` through a `DataLoader` (num_workers 0 and 2), decoding every JPEG each epoch.

The images: `--images N` ImageNet-sized JPEGs (quality 90) written once to `--folder`: CIFAR-10
train images (the JPEG archive of the dev machines, if present; else smooth noise) upscaled bicubic
to ImageNet's common sizes, 500 x 375 (60%), 375 x 500 (20%), 500 x 333 (20%).

    python scripts/bench_loader_224.py --images 4000 --epoch-images 1024 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from resnet_bench.data.artifact import load_prepared  # noqa: E402
from resnet_bench.data.augment import Augment, ResizedCrop  # noqa: E402
from resnet_bench.data.loader import DeviceLoader  # noqa: E402
from resnet_bench.env import hardware  # noqa: E402

CIFAR_JPEG = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
SIZES = [(375, 500)] * 3 + [(500, 375), (333, 500)]  # (h, w)
BATCH = 256


def write_folder(folder: Path, n: int) -> None:
    from PIL import Image

    sources = []
    if CIFAR_JPEG.exists():
        with tarfile.open(CIFAR_JPEG) as tar:
            for m in tar:
                if m.isfile() and "/train/" in m.name:
                    sources.append((m.name.split("/")[-2], tar.extractfile(m).read()))
                    if len(sources) == n:
                        break
    rng = np.random.default_rng(0)
    for i in range(n):
        if sources:
            cls, blob = sources[i]
            im = Image.open(io.BytesIO(blob)).convert("RGB")
        else:
            cls, im = f"c{i % 10}", Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        h, w = SIZES[i % len(SIZES)]
        out = folder / "train" / cls / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        im.resize((w, h), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
    for cls_dir in sorted((folder / "train").iterdir()):  # one test image per class (the layout needs a test/)
        (folder / "test" / cls_dir.name).mkdir(parents=True, exist_ok=True)
        first = next(cls_dir.iterdir())
        (folder / "test" / cls_dir.name / first.name).write_bytes(first.read_bytes())


def cpu_seconds() -> float:
    """CPU time of this process and its children alive now (DataLoader workers are persistent)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def epoch_rates(loader) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of one pass."""
    t0, c0, n = time.perf_counter(), cpu_seconds(), 0
    for _, y in loader:
        n += len(y)
    return n / (time.perf_counter() - t0), n / max(cpu_seconds() - c0, 1e-9)


def torchvision_loader(folder: Path, mean, std, workers: int, n: int):
    import torchvision.datasets as D
    import torchvision.transforms as T

    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    data = D.ImageFolder(str(folder / "train"), tf)
    data = torch.utils.data.Subset(data, range(min(n, len(data))))
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--folder", default=str(REPO / "scratch" / "imagenet_like"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epoch-images", type=int, default=0, help="images per timed pass (0: all of the store)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--matmul", action="store_true", help="also time the batched float form (slow on CPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    if not (folder / "train").is_dir():
        write_folder(folder, args.images)
    prepared = folder.with_name(folder.name + "_prepared")
    if not (prepared / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "resnet_bench.data.prepare", "--name", "imagenet_like", "--format",
                        "imagefolder", "--source", str(folder), "--out", str(prepared), "--val-fraction", "0.01",
                        "--image-size", "256", "--max-aspect", "1.3333333333333333", "--eval-resize", "256",
                        "--eval-crop", "224"], check=True, cwd=REPO)
    ds = load_prepared(prepared)
    mean, std = ds.meta["mean"], ds.meta["std"]
    n = args.epoch_images or len(ds.train_y)
    train_x, train_y, extents = ds.train_x[:n], ds.train_y[:n], ds.train_extents[:n]
    aug = Augment(flip=True, resized_crop=ResizedCrop(224, (0.08, 1.0), (3 / 4, 4 / 3)))
    # (label, torch threads, prefetch thread, resample): the default CPU configuration first.
    configs = [(f"{args.threads} threads, inline", args.threads, 0, "per_image"),
               ("1 thread + prefetch thread", 1, 2, "per_image")]
    if args.matmul:
        configs.append((f"{args.threads} threads, batched float matmul (the GPU form)", args.threads, 0, "matmul"))
    ours = {f"resnet_bench DeviceLoader, cpu, {label}": (threads, DeviceLoader(
        train_x, train_y, batch_size=BATCH, shuffle=True, seed=0, mean=mean, std=std, augment=aug,
        extents=extents, device="cpu", max_resident_bytes=0, resample=method, prefetch=prefetch))
        for label, threads, prefetch, method in configs}
    theirs = {f"torchvision ImageFolder+RandomResizedCrop+DataLoader, num_workers={w}": (args.threads,
              torchvision_loader(folder, mean, std, w, n)) for w in (0, 2)}
    variants = {**ours, **theirs}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    per_cpu: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats + 1):  # interleaved; repeat 0 is the warm-up (page cache, workers, kernels)
        for name, (threads, loader) in variants.items():
            torch.set_num_threads(threads)
            if isinstance(loader, DeviceLoader):
                loader.set_epoch(r)
            rate, cpu_rate = epoch_rates(loader)
            if r:
                rates[name].append(rate)
                per_cpu[name].append(cpu_rate)
            print(f"repeat {r} {name}: {rate:,.0f} img/s, {cpu_rate:,.0f} img per CPU-s", file=sys.stderr)
    base = statistics.median(rates[next(iter(ours))])
    print(f"data: {n} of {args.images} ImageNet-sized JPEGs per pass, from {folder} (store {ds.meta['shapes']['train']}); "
          f"batch {BATCH}; random-resized crop 224 + flip + normalise; torch threads {args.threads}; "
          f"{hardware()['cpu_model']}, torch {torch.__version__}\n")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in __import__('os').getloadavg())}\n")
    base_cpu = statistics.median(per_cpu[next(iter(ours))])
    print("| pipeline | images/s, median (min-max) | first row's speed-up | images per CPU-second, median "
          "(min-max) | first row's speed-up per CPU-second |")
    print("| --- | --- | --- | --- | --- |")
    for name, rs in rates.items():
        med, cs = statistics.median(rs), per_cpu[name]
        cmed = statistics.median(cs)
        print(f"| {name} | {med:,.0f} ({min(rs):,.0f}-{max(rs):,.0f}) | {base / med:.2f}x | {cmed:,.0f} "
              f"({min(cs):,.0f}-{max(cs):,.0f}) | {base_cpu / cmed:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
