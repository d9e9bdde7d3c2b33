"""Training-loop images/s against the bench step, ResNet-50 at 224 on one GPU: is the data path free?

The loop: `resnet_bench.train.train_cell` on an ImageNet-like prepared store (synthetic uint8 images in a
256 x 341 slot with their extents, as `prepare --image-size 256 --max-aspect 1.3333` writes them), the
fb_resnet_imagenet recipe's augmentation (random-resized crop 224, flip, colour jitter, lighting), so
every batch goes through the prefetching loader: host ring, side-stream copy, batched crop-resize. Its
`train_img_per_s` of the last epoch (the first warms up cuDNN and the allocator) is compared with
`resnet_bench.bench.measure_throughput`'s train step (forward + loss + backward + SGD on a batch
already on the device) of the same model, batch, size, AMP and memory format. The goal: within 5 %.

    python scripts/gpu_loop_vs_bench.py --images 12800 --epochs 2            # on a CUDA machine
    python scripts/gpu_loop_vs_bench.py --device cpu --images 64 --image-size 64 --batch-size 16 --epochs 1 \
        --warmup 1 --repeats 1                                                  # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from resnet_bench import config as cfg  # noqa: E402
from resnet_bench.data.artifact import content_sha256  # noqa: E402
from resnet_bench.data.images import StorePolicy  # noqa: E402
from resnet_bench.env import hardware  # noqa: E402


def synthetic_store(root: Path, n: int, size: int, crop: int) -> Path:
    """A prepared artifact of random images: train in a size x 4/3 size slot with extents, val/test crop x crop."""
    out = root / "synthetic"
    out.mkdir(parents=True)
    policy = StorePolicy(image_size=size, max_aspect=4 / 3, eval_resize=size, eval_crop=crop)
    slot = policy.describe()["train"]["slot"]
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(out / "train_x.npy", "w+", np.uint8, (n, 3, *slot))
    extents = np.array([[slot[0], slot[1], 0], [slot[0], slot[1], 1], [slot[0], slot[0], 0]] * (n // 3 + 1),
                       np.int32)[:n]
    for i in range(0, n, 256):
        x[i:i + 256] = rng.integers(0, 256, (min(256, n - i), 3, *slot), dtype=np.uint8)
    x.flush()
    del x
    np.save(out / "train_extents.npy", extents)
    np.save(out / "train_y.npy", rng.integers(0, 1000, n))
    for split in ("val", "test"):
        np.save(out / f"{split}_x.npy", rng.integers(0, 256, (256, 3, crop, crop), dtype=np.uint8))
        np.save(out / f"{split}_y.npy", rng.integers(0, 1000, 256))
    meta = {"name": "synthetic", "format": "imagefolder", "classes": [str(i) for i in range(1000)],
            "num_classes": 1000, "channels": 3, "height": crop, "width": crop, "mean": [0.5] * 3, "std": [0.25] * 3,
            "counts": {"train": n, "val": 256, "test": 256}, "resize": policy.describe(),
            "shapes": {"train": [3, *slot], "val": [3, crop, crop], "test": [3, crop, crop]},
            "split": {"val_fraction": 0.1, "seed": 0}, "source_sha256": None}
    meta["content_sha256"] = content_sha256(out, meta)
    (out / "meta.json").write_text(json.dumps(meta))
    return root


def main(argv=None) -> int:
    from resnet_bench.bench import measure_throughput
    from resnet_bench.models import build_model
    from resnet_bench.train import train_cell

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=12_800)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--model", default="resnet50_v1")
    p.add_argument("--warmup", type=int, default=10, help="bench steps before timing")
    p.add_argument("--repeats", type=int, default=20, help="timed bench repeats of 5 steps")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    store = round(args.image_size * 256 / 224)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = synthetic_store(Path(tmp), args.images, store, args.image_size)
        layer = cfg.Layer("gpu_loop_vs_bench", {
            "grid": {"models": [args.model], "datasets": ["synthetic"], "seeds": [0]},
            "arch": {"stem": "imagenet", "variant": "paper", "bottleneck_stride": "3x3"},
            "recipe": {"name": "fb_resnet_imagenet", "epochs": args.epochs, "batch_size": args.batch_size,
                       "augment": {"resized_crop": {"size": args.image_size}}},
            "runtime": {"device": args.device, "amp": "bf16" if cuda else "none", "channels_last": cuda,
                        "deterministic": not cuda},
            "bench": {"enabled": False}, "resources": {"gpus_per_trial": 1 if cuda else 0}})
        exp = cfg.resolve_layers("gpu_loop_vs_bench", [layer], cfg.Params(), check_datasets=False).experiment
        (cell,) = cfg.expand_grid(exp, data={"synthetic": cfg.data_identity(prepared / "synthetic")})
        record = train_cell(cell, prepared)
    loop = record["epochs"][-1]["train_img_per_s"]
    model = build_model(args.model, 1000, variant="paper", bottleneck_stride="3x3").to(args.device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    bench = measure_throughput(model, batch_size=args.batch_size, img_size=args.image_size, in_channels=3, num_classes=1000,
                               device=args.device, amp="bf16" if cuda else "none", channels_last=cuda,
                               warmup=args.warmup, repeats=args.repeats, steps_per_repeat=5)["train_img_per_s"]
    gpu = torch.cuda.get_device_name() if cuda else hardware()["cpu_model"]
    print(f"{args.model} at {args.image_size}, batch {args.batch_size}, {gpu}: training loop {loop:,.0f} img/s (epoch "
          f"{len(record['epochs'])} of {args.epochs}), bench step {bench:,.0f} img/s: loop / bench = {loop / bench:.3f} "
          f"({'within' if loop >= 0.95 * bench else 'NOT within'} 5 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
