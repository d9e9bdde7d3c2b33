"""What a grid costs before anything trains: GPU-hours from the models' FLOPs and a stated device rate.

One function, `estimate_gpu_hours`, with every input explicit: the cells, the image counts and sides
of each dataset, and the device's sustained training rate. A cell's work is, per epoch, 3 x its forward
FLOPs (forward + backward ~ 2 x forward) on every train image at that epoch's crop size plus one
forward on every validation and test image (training evaluates both each epoch), then one more test
pass. FLOPs come from `resnet_bench.models.model_flops` (torch's FlopCounterMode: 2 x multiply-adds of
convolutions and matmuls) on the meta device. Dividing by a rate assumes throughput follows FLOPs,
which holds within tens of percent across the ResNet family on one GPU (the bench pass measures the
real rate once cells have run).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# The reference rate: NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
# "Training performance: NVIDIA DGX A100 (8x A100 80GB)", 1 GPU, mixed precision: 2470 img/s
# (pytorch-21.03 NGC container) for ResNet-50 v1.5 at 224 x 224, which is resnet50_v1 here (stride on
# the 3x3). Times 3 x its forward FLOPs, that is ~61 TFLOP/s of training work.
REFERENCE = {"device": "NVIDIA A100 80GB, mixed precision", "model": "resnet50_v1", "img_size": 224,
             "img_per_s": 2470.0,
             "source": "NVIDIA DeepLearningExamples ResNet50 v1.5 PyTorch README, DGX A100 training table, 1 GPU"}
TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (~2 x forward)


@dataclass(frozen=True)
class DatasetSize:
    """What the estimate needs of a dataset: images per split, channels, classes and image sides."""

    train: int
    val: int
    test: int
    channels: int
    num_classes: int
    train_side: int   # the stored train images' side (used when the recipe does not crop to a size)
    eval_side: int    # side of the validation and test images
    source: str       # "prepared" or where the counts come from


@dataclass(frozen=True)
class DeviceRate:
    name: str
    train_flops_per_s: float
    source: str


@functools.cache
def forward_flops(model: str, stem: str, width: int | None, unit: str, variant: str, shortcut: str,
                  bottleneck_stride: str, channels: int, num_classes: int, side: int) -> int:
    """Forward FLOPs of one image (meta device: nothing is computed)."""
    import torch

    from resnet_bench.models import build_model, model_flops

    options = {"stem": stem, "unit": unit, "variant": variant, "shortcut": shortcut,
               "bottleneck_stride": bottleneck_stride}
    if width is not None:
        options["width"] = width
    with torch.device("meta"):
        net = build_model(model, num_classes=num_classes, in_channels=channels, **options)
    return model_flops(net, (1, channels, side, side))


def reference_rate() -> DeviceRate:
    """REFERENCE as a training FLOP rate."""
    flops = forward_flops(REFERENCE["model"], "imagenet", None, "original", "modern", "projection", "3x3", 3, 1000,
                          REFERENCE["img_size"])
    rate = REFERENCE["img_per_s"] * TRAIN_FLOPS_PER_FORWARD * flops
    return DeviceRate(f"{REFERENCE['device']} ({REFERENCE['img_per_s']:.0f} img/s on ResNet-50 v1.5 at 224)", rate,
                      REFERENCE["source"])


def _train_sides(cell, data: DatasetSize) -> list[int]:
    """The train crop side of every epoch (a resolution schedule changes it per epoch)."""
    from resnet_bench.data.augment import Augment

    aug = Augment.from_dict(cell.recipe.augment.model_dump()) or Augment()
    epochs = cell.recipe.epochs
    return [aug.out_size(e, epochs) or data.train_side for e in range(1, epochs + 1)]


def cell_flops(cell, data: DatasetSize) -> int:
    """Total FLOPs of training and evaluating one cell."""
    a = cell.arch
    fwd = functools.partial(forward_flops, cell.model, a.stem, a.width, cell.unit, a.variant, a.shortcut,
                            a.bottleneck_stride, data.channels, data.num_classes)
    train = sum(data.train * TRAIN_FLOPS_PER_FORWARD * fwd(side) for side in _train_sides(cell, data))
    evaluation = (data.val + data.test) * fwd(data.eval_side) * cell.recipe.epochs + data.test * fwd(data.eval_side)
    return train + evaluation


def estimate_gpu_hours(cells, datasets: dict[str, DatasetSize], rate: DeviceRate) -> dict:
    """{"rows": [(label, FLOPs, GPU-hours)], "flops", "gpu_hours", "rate", "missing": datasets with no size}."""
    rows, missing = [], sorted({c.dataset for c in cells if c.dataset not in datasets})
    for c in cells:
        if c.dataset in datasets:
            f = cell_flops(c, datasets[c.dataset])
            rows.append((c.label(), f, f / rate.train_flops_per_s / 3600))
    return {"rows": rows, "flops": sum(r[1] for r in rows), "gpu_hours": sum(r[2] for r in rows), "rate": rate,
            "missing": missing}


def format_estimate(est: dict) -> list[str]:
    """Console lines: the total, the rate and its source, then GPU-hours per model and dataset (seeds summed)."""
    rate = est["rate"]
    lines = [f"[sweep] estimate: {len(est['rows'])} cells, {est['flops']:.3g} FLOPs = {est['gpu_hours']:,.1f} "
             f"GPU-hours at {rate.train_flops_per_s / 1e12:.1f} TFLOP/s of training ({rate.name}; {rate.source}); "
             "assumes throughput follows FLOPs"]
    per: dict[str, list] = {}
    for label, _, hours in est["rows"]:
        model_ds = label.rsplit("/seed", 1)[0]
        per.setdefault(model_ds, []).append(hours)
    for key, hours in per.items():
        lines.append(f"[sweep]   {key}: {len(hours)} seed(s) x {hours[0]:,.2f} GPU-h = {sum(hours):,.1f} GPU-h")
    if est["missing"]:
        lines.append(f"[sweep]   no size known for {', '.join(est['missing'])} (an image folder not prepared yet): "
                     "left out of the total")
    return lines
