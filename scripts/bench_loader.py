"""On-device batch loader vs the usual torchvision pipeline, images/s on CIFAR-sized data.

Both produce normalised, augmented (pad-4 random crop + horizontal flip) float
batches of 128 for one epoch. Timed region: one full pass over the train split,
from the first batch request to the last batch in hand (no model).

    python scripts/bench_loader.py [--prepared data/prepared/cifar10_jpeg] [--repeats 3]

Without --prepared it uses random uint8 data of CIFAR-10's shape (50,000 x 3 x 32 x 32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_bench.data.artifact import load_prepared  # noqa: E402
from resnet_bench.data.loader import Augment, DeviceLoader  # noqa: E402
from resnet_bench.env import hardware  # noqa: E402


def torchvision_loader(x: np.ndarray, y: np.ndarray, mean, std, workers: int):
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return tf(Image.fromarray(x[i].transpose(1, 2, 0))), int(y[i])

    return torch.utils.data.DataLoader(DS(), batch_size=128, shuffle=True, num_workers=workers, drop_last=False)


def epoch_img_per_s(loader, n: int) -> float:
    t0 = time.perf_counter()
    for xb, _ in loader:
        pass
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepared", help="a prepared dataset folder (e.g. data/prepared/cifar10_jpeg)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--subset", type=int, default=10_000, help="images per torchvision epoch (it is slow)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.prepared:
        ds = load_prepared(args.prepared)
        x, y, mean, std = ds.train_x, ds.train_y, ds.meta["mean"], ds.meta["std"]
        source = args.prepared
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (50_000, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, 50_000)
        mean, std, source = [0.5] * 3, [0.25] * 3, "random uint8 50000x3x32x32"
    rows = []
    dev = DeviceLoader(torch.from_numpy(x), torch.from_numpy(y), batch_size=128, shuffle=True, seed=0, mean=mean,
                       std=std, augment=Augment(crop_pad=4, flip=True), device="cpu")
    rates = []
    for r in range(args.repeats + 1):  # first pass is warm-up
        dev.set_epoch(r)
        rate = epoch_img_per_s(dev, len(y))
        if r:
            rates.append(rate)
    rows.append(("resnet_bench DeviceLoader (cpu)", len(y), rates))
    # The same split memory-mapped from an .npy and streamed (max_resident_bytes=0): each batch's rows
    # are gathered from the map, as for an artifact larger than the loader's memory budget.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        xm = np.load(Path(tmp) / "x.npy", mmap_mode="c")
        stream = DeviceLoader(xm, torch.from_numpy(np.asarray(y)), batch_size=128, shuffle=True, seed=0,
                              mean=mean, std=std, augment=Augment(crop_pad=4, flip=True), device="cpu",
                              max_resident_bytes=0)
        rates = []
        for r in range(args.repeats + 1):  # first pass is warm-up (and reads the file into the page cache)
            stream.set_epoch(r)
            rate = epoch_img_per_s(stream, len(y))
            if r:
                rates.append(rate)
        rows.append(("resnet_bench DeviceLoader (cpu), streamed from a memory map", len(y), rates))
    xs, ys = x[: args.subset], y[: args.subset]
    for workers in (0, 2):
        loader = torchvision_loader(xs, ys, mean, std, workers)
        rates = [epoch_img_per_s(loader, len(ys)) for _ in range(args.repeats)]
        rows.append((f"torchvision Dataset+DataLoader, num_workers={workers}", len(ys), rates))
    base = statistics.median(rows[0][2])
    print(f"data: {source}; batch 128; pad-4 crop + flip + normalise; torch threads {args.threads}; "
          f"{hardware()['cpu_model']}, torch {torch.__version__}\n")
    print("| pipeline | images per pass | images/s, median (min-max) | DeviceLoader speed-up |")
    print("| --- | --- | --- | --- |")
    for name, n, rates in rows:
        med = statistics.median(rates)
        print(f"| {name} | {n} | {med:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {base / med:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
