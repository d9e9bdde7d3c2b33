"""Batch augmentation on the device, every random number from the loader's seeded CPU generator.

- `crop_pad` (He et al. 2015 Sec. 4.2, after Lee et al. 2015): zero-pad, random crop back, as one gather.
- `resized_crop`: torchvision `RandomResizedCrop` (Szegedy et al. 2015's "Inception" crop; the crop of
  fb.resnet.torch's `RandomSizedCrop` and FFCV's): per image a box of `scale` x the image area and log-
  uniform aspect `ratio`, sampled as `RandomResizedCrop.get_params` (10 tries, then the centre crop),
  within the image's true extent, and resized to `size`.
- `scale_jitter` (He et al. 2015 Sec. 3.4): the shorter side resized to a uniform integer in
  [min_size, max_size], a random `crop` x `crop` window. From a store whose shorter side is below
  max_size it upsamples the store: an approximation of resizing the original image (the loader says so).
- `color_jitter`: torchvision `ColorJitter(brightness, contrast, saturation)` (its `_blend` formulas,
  clamped to [0, 1], factors uniform in [max(0, 1 - v), 1 + v], the three in a random order per image).
- `lighting`: AlexNet's PCA lighting noise as fb.resnet.torch `datasets/transforms.lua` `Lighting`,
  with the eigenvalues and eigenvectors of `datasets/imagenet.lua`: rgb += eigvec @ (alpha * eigval),
  alpha ~ N(0, alphastd) per image; not clamped (as there).
- `flip`: a random half of the batch mirrored left-right.

The crop-resize is torchvision's antialiased bilinear resize (`F.interpolate(antialias=True)`, the
kernel `torchvision.transforms.v2.functional.resized_crop` calls) of each image's box. On CUDA it
runs batched: per image and axis a dense interpolation matrix (the same triangle-filter weights), so
the whole batch is two batched matmuls, out = Wy @ x @ Wx^T. On CPU it is the ATen uint8 kernel per
image (torchvision v2's own CPU path), about 5x faster there than the batched float form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

# fb.resnet.torch datasets/imagenet.lua `pca`: eigenvalues and eigenvectors (columns) of the RGB
# covariance of ImageNet pixels on the 0..1 scale (Krizhevsky et al. 2012's lighting noise).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale (ITU-R 601-2 luma)
RESIZE_TRIES = 10  # RandomResizedCrop.get_params


@dataclass(frozen=True)
class ResizedCrop:
    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]


@dataclass(frozen=True)
class ScaleJitter:
    min_size: int
    max_size: int
    crop: int


@dataclass(frozen=True)
class ColorJitter:
    brightness: float
    contrast: float
    saturation: float


@dataclass(frozen=True)
class Lighting:
    alphastd: float


@dataclass(frozen=True)
class ResolutionSchedule:
    """FFCV's progressive resizing (train_imagenet.py get_resolution): min_res up to epoch start_ramp,
    then linear to max_res at end_ramp in multiples of `step`; the ramp ends are fractions of training."""

    min_res: int
    max_res: int
    start_ramp: float
    end_ramp: float
    step: int

    def at(self, epoch: int, epochs: int) -> int:
        """Resolution of epoch `epoch` (1-based) of `epochs` (FFCV counts epochs from 0)."""
        e, start, end = epoch - 1, self.start_ramp * epochs, self.end_ramp * epochs
        if e <= start:
            return self.min_res
        if e >= end:
            return self.max_res
        interp = self.min_res + (self.max_res - self.min_res) * (e - start) / (end - start)
        return int(round(interp / self.step)) * self.step


_PARTS = {"resized_crop": ResizedCrop, "scale_jitter": ScaleJitter, "color_jitter": ColorJitter,
          "lighting": Lighting, "resolution_schedule": ResolutionSchedule}


@dataclass(frozen=True)
class Augment:
    """The recipe's `augment` section (resnet_bench.config.schema.Augment) as plain values."""

    crop_pad: int = 0
    flip: bool = False
    resized_crop: ResizedCrop | None = None
    scale_jitter: ScaleJitter | None = None
    color_jitter: ColorJitter | None = None
    lighting: Lighting | None = None
    resolution_schedule: ResolutionSchedule | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment | None":
        if not d:
            return None
        kw = {}
        for f in fields(cls):
            v = d.get(f.name)
            if f.name in _PARTS and v is not None:
                v = _PARTS[f.name](**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})
            if v is not None:
                kw[f.name] = v
        return cls(**kw)

    @property
    def crops(self) -> bool:
        """A crop that resizes: the output size is the crop's, whatever the stored images' size."""
        return self.resized_crop is not None or self.scale_jitter is not None

    @property
    def colour(self) -> bool:
        return self.color_jitter is not None or self.lighting is not None

    def active(self) -> bool:
        return bool(self.crop_pad or self.flip or self.crops or self.colour)

    def out_size(self, epoch: int, epochs: int) -> int | None:
        if self.resolution_schedule is not None:
            return self.resolution_schedule.at(epoch, epochs)
        if self.resized_crop is not None:
            return self.resized_crop.size
        return self.scale_jitter.crop if self.scale_jitter is not None else None


def to_device(t, device):
    """A host tensor (the CPU generator's draws) on `device` without waiting: on CUDA it is copied from
    pinned memory asynchronously (the caching host allocator keeps the pinned block until the copy
    is done), so the host keeps queueing work ahead of the GPU."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


# ---- crop_pad and flip (fixed-size stores) ------------------------------------------------------------


def crop_windows(padded, index, pad: int, gen):
    """Images `index` of a zero-padded stack, each cropped at its own random offset: one gather.

    padded: N x C x (H+2p) x (W+2p). `unfold` views it as N x C x (2p+1) x (2p+1) x H x W
    (every window, no copy); indexing (image, dy, dx) per row copies out B x C x H x W.
    """
    _, _, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    b = len(index)
    dy = to_device(torch.randint(0, 2 * pad + 1, (b,), generator=gen), padded.device)
    dx = to_device(torch.randint(0, 2 * pad + 1, (b,), generator=gen), padded.device)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[index, :, dy, dx]


def flip_mask(b: int, gen) -> torch.Tensor:
    """Which images of a batch of b to mirror: a random half (CPU bool B-vector)."""
    return torch.rand(b, generator=gen) < 0.5


def random_flip(x, gen):
    """Mirror a random half of the batch left-right (x: B x C x H x W).

    A select, not boolean-mask indexing: `x[m]` needs the mask's count on the host (a nonzero, which
    waits for the GPU); `torch.where` has a fixed shape."""
    m = to_device(flip_mask(x.shape[0], gen), x.device)
    return torch.where(m.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop_flip(x, aug: Augment, gen):
    """Zero-pad by `crop_pad` and crop back to H x W at a random offset per image, then flip half."""
    if aug.crop_pad:
        p = aug.crop_pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, as in the paper
        x = crop_windows(padded, torch.arange(len(x), device=x.device), p, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return x


# ---- boxes: where each output image comes from ------------------------------------------------------------
# A plan per axis, B-vectors (int64, CPU): the source window [start, start + length) of the image is
# resized to `total` pixels and the output is pixels [offset, offset + out) of that. A resized crop is
# (box start, box length, out, 0); scale jitter is (0, extent, resized side, crop offset).


@dataclass(frozen=True)
class AxisPlan:
    start: torch.Tensor
    length: torch.Tensor
    total: torch.Tensor
    offset: torch.Tensor


def resized_crop_boxes(height, width, rc: ResizedCrop, gen) -> torch.Tensor:
    """B x 4 int64 (top, left, h, w): `RandomResizedCrop.get_params` per image of extent height x width
    (B-vectors), batched: the first of 10 tries that fits, else the centre crop of the clamped ratio."""
    h_img, w_img = height.double(), width.double()
    b = len(height)
    area = (h_img * w_img)[:, None]
    u_scale = torch.rand(b, RESIZE_TRIES, generator=gen, dtype=torch.float64)
    u_ratio = torch.rand(b, RESIZE_TRIES, generator=gen, dtype=torch.float64)
    u_top = torch.rand(b, generator=gen, dtype=torch.float64)
    u_left = torch.rand(b, generator=gen, dtype=torch.float64)
    target = area * (rc.scale[0] + (rc.scale[1] - rc.scale[0]) * u_scale)
    log0, log1 = math.log(rc.ratio[0]), math.log(rc.ratio[1])
    aspect = torch.exp(log0 + (log1 - log0) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= w_img[:, None]) & (h > 0) & (h <= h_img[:, None])
    first = fits.to(torch.int8).argmax(1)
    rows = torch.arange(b)
    w_try, h_try, found = w[rows, first], h[rows, first], fits.any(1)
    # Fallback (get_params after 10 misses): the whole image, its ratio clamped into `ratio`.
    in_ratio = w_img / h_img
    lo, hi = min(rc.ratio), max(rc.ratio)
    w_fb = torch.where(in_ratio < lo, w_img, torch.where(in_ratio > hi, torch.round(h_img * hi), w_img))
    h_fb = torch.where(in_ratio < lo, torch.round(w_img / lo), h_img)
    w_out, h_out = torch.where(found, w_try, w_fb), torch.where(found, h_try, h_fb)
    top = torch.where(found, torch.floor(u_top * (h_img - h_out + 1)), torch.floor((h_img - h_out) / 2))
    left = torch.where(found, torch.floor(u_left * (w_img - w_out + 1)), torch.floor((w_img - w_out) / 2))
    return torch.stack([top, left, h_out, w_out], 1).to(torch.int64)


def _torchvision_resized(h, w, short):
    """torchvision Resize(short) output sizes, B-vectors: int(short * long / shorter side)."""
    portrait = w <= h
    long_side = torch.where(portrait, h, w).double()
    short_side = torch.where(portrait, w, h).double()
    other = torch.floor(short.double() * long_side / short_side).to(torch.int64)
    return torch.where(portrait, other, short), torch.where(portrait, short, other)


def plans(height, width, aug: Augment, out: int, gen) -> tuple[AxisPlan, AxisPlan]:
    """(rows, columns) plans of a batch of images of extent height x width (original orientation)."""
    b = len(height)
    if aug.resized_crop is not None:
        top, left, h, w = resized_crop_boxes(height, width, aug.resized_crop, gen).unbind(1)
        full, zero = torch.full((b,), out, dtype=torch.int64), torch.zeros(b, dtype=torch.int64)
        return AxisPlan(top, h, full, zero), AxisPlan(left, w, full, zero)
    sj = aug.scale_jitter
    short = sj.min_size + torch.floor(torch.rand(b, generator=gen, dtype=torch.float64)
                                      * (sj.max_size - sj.min_size + 1)).to(torch.int64)
    rh, rw = _torchvision_resized(height, width, short)
    u_top = torch.rand(b, generator=gen, dtype=torch.float64)
    u_left = torch.rand(b, generator=gen, dtype=torch.float64)
    top = torch.floor(u_top * (rh - out + 1).double()).to(torch.int64)
    left = torch.floor(u_left * (rw - out + 1).double()).to(torch.int64)
    zero = torch.zeros(b, dtype=torch.int64)
    return AxisPlan(zero, height.to(torch.int64), rh, top), AxisPlan(zero, width.to(torch.int64), rw, left)


# ---- the crop-resize ---------------------------------------------------------------------------------------


def aa_matrix(plan: AxisPlan, out: int, size: int, device) -> torch.Tensor:
    """B x out x size float32: row i holds the weights of output pixel `offset + i` over source pixels
    0..size-1 (nonzero only inside the window), the triangle filter of ATen's antialiased bilinear
    resize (upsample_bilinear2d_aa; Pillow's): support max(scale, 1), weights normalised per row."""
    start, length = to_device(plan.start, device), to_device(plan.length, device)
    scale = (length.double() / to_device(plan.total, device).double())[:, None]  # B x 1
    support = torch.where(scale >= 1, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1, 1 / scale, torch.ones_like(scale))
    centre = scale * (to_device(plan.offset, device)[:, None] + torch.arange(out, device=device) + 0.5)  # B x out
    lo = torch.clamp(torch.trunc(centre - support + 0.5), min=0)
    hi = torch.minimum(torch.trunc(centre + support + 0.5), length[:, None].double())
    src = torch.arange(size, device=device)[None, None, :] - start[:, None, None]  # B x 1 x size
    weight = torch.clamp(1 - ((src - centre[..., None] + 0.5) * invscale[..., None]).abs(), min=0)
    weight = weight * ((src >= lo[..., None]) & (src < hi[..., None]))
    return (weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)).float()


def crop_resize(src: torch.Tensor, index: torch.Tensor, rows: AxisPlan, cols: AxisPlan, out: int,
                transposed: torch.Tensor, method: str, *, flip: torch.Tensor | None = None,
                normalise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """B x C x out x out: the planned window of each image src[index[i]] (uint8, N x C x H x W, stored
    orientation) resized, antialiased bilinear; images stored transposed are transposed back; then the
    images `flip` marks mirrored and, with `normalise` = (scale, shift) (1 x C x 1 x 1), x * scale + shift
    as float.

    method "matmul": batched float, two bmm. "per_image": the ATen uint8 kernel per image, each image
    flipped and normalised while it is in cache (the same values as doing it for the whole batch)."""
    _, c, h, w = src.shape
    b = len(index)
    t = transposed.to(torch.bool)
    if method == "matmul":
        wy, wx = aa_matrix(rows, out, h, src.device), aa_matrix(cols, out, w, src.device)
        y = torch.matmul(torch.matmul(wy[:, None], src[index].float()), wx[:, None].transpose(-1, -2))
        # selects, not boolean-mask indexing (that reads a count back from the GPU); out x out is square
        if bool(t.any()):  # t is on the host: no GPU wait
            y = torch.where(to_device(t, y.device).view(-1, 1, 1, 1), y.transpose(-1, -2), y)
        if flip is not None:
            y = torch.where(to_device(flip, y.device).view(-1, 1, 1, 1), y.flip(3), y)
        return y.mul_(normalise[0]).add_(normalise[1]) if normalise is not None else y
    y = torch.empty((b, c, out, out), dtype=src.dtype if normalise is None else torch.float32, device=src.device)
    r = torch.stack([rows.start, rows.length, rows.total, rows.offset], 1).tolist()
    q = torch.stack([cols.start, cols.length, cols.total, cols.offset], 1).tolist()
    flips = flip.tolist() if flip is not None else [False] * b
    for i, (k, (y0, yl, yt, yo), (x0, xl, xt, xo), tr, fl) in enumerate(zip(index.tolist(), r, q, t.tolist(), flips)):
        window = src[k:k + 1, :, y0:y0 + yl, x0:x0 + xl].contiguous(memory_format=torch.channels_last)
        z = F.interpolate(window, size=(yt, xt), mode="bilinear", antialias=True, align_corners=False)
        z = z[0, :, yo:yo + out, xo:xo + out]
        # To C x H x W on uint8 (a quarter of the bytes of float), then normalise in the batch's row:
        # about 3x less CPU than normalising the channels-last float and copying it there.
        z = (z.transpose(-1, -2) if tr else z).contiguous()
        z = z.flip(2) if fl else z
        if normalise is None:
            y[i] = z
        else:  # converted into the batch, then in place: the values of z.float() * scale + shift
            y[i].copy_(z).mul_(normalise[0][0]).add_(normalise[1][0])
    return y


def oriented(plan_y: AxisPlan, plan_x: AxisPlan, transposed: torch.Tensor) -> tuple[AxisPlan, AxisPlan]:
    """Plans in stored orientation: a transposed image's rows are its original columns."""
    t = transposed.to(torch.bool)

    def pick(a, b):
        return AxisPlan(*(torch.where(t, getattr(b, f), getattr(a, f)) for f in ("start", "length", "total", "offset")))

    return pick(plan_y, plan_x), pick(plan_x, plan_y)


# ---- colour ------------------------------------------------------------------------------------------------


def jitter_params(b: int, cj: ColorJitter, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(B x 3 factors for brightness, contrast, saturation; B x 3 order of the three ops per image)."""
    order = torch.rand(b, 3, generator=gen).argsort(1)
    u = torch.rand(b, 3, generator=gen)
    v = torch.tensor([cj.brightness, cj.contrast, cj.saturation])
    lo = torch.clamp(1 - v, min=0)
    return lo + (1 + v - lo) * u, order


def color_jitter(x01: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_brightness / adjust_contrast / adjust_saturation on B x 3 x H x W in [0, 1], per
    image in `order` (0 brightness, 1 contrast, 2 saturation) with `factors` (B x 3)."""
    gray_w = torch.tensor(GRAY_WEIGHTS, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    factors, order = to_device(factors, x01.device).to(x01.dtype), to_device(order, x01.device)
    for slot in range(3):
        op = order[:, slot].view(-1, 1, 1, 1)
        f = factors.gather(1, order[:, slot:slot + 1]).view(-1, 1, 1, 1)
        gray = (x01 * gray_w).sum(1, keepdim=True)  # B x 1 x H x W
        target = torch.where(op == 0, torch.zeros_like(gray),
                             torch.where(op == 1, gray.mean((1, 2, 3), keepdim=True), gray))
        x01 = (f * x01 + (1 - f) * target).clamp_(0, 1)  # torchvision _blend
    return x01


def lighting_offsets(b: int, lt: Lighting, gen) -> torch.Tensor:
    """B x 3 RGB offsets: eigvec @ (alpha * eigval), alpha ~ N(0, alphastd) per image (fb.resnet.torch)."""
    alpha = torch.randn(b, 3, generator=gen) * lt.alphastd
    return (alpha * torch.tensor(PCA_EIGVAL)) @ torch.tensor(PCA_EIGVEC).T


# ---- store compatibility ---------------------------------------------------------------------------------


def store_problems(meta: dict, augment: dict | None, *, where: str) -> tuple[list[str], list[str]]:
    """(problems, notes) of training `augment` (the recipe's section as a dict) on the artifact `meta`."""
    aug = Augment.from_dict(augment) or Augment()
    train = ((meta.get("resize") or {}).get("train") or {})
    variable = train.get("policy") == "shorter_side_aspect_capped"
    problems, notes = [], []
    if variable and not aug.crops:
        problems.append(f"{where}: its train images keep their aspect ratio (slot {train.get('slot')}), so the recipe "
                        "needs augment.resized_crop or augment.scale_jitter to cut fixed-size batches from them")
    if variable and aug.crop_pad:
        problems.append(f"{where}: augment.crop_pad needs train images of one size; this store keeps aspect ratios "
                        "(use resized_crop, or prepare with max_aspect 1)")
    stored = train.get("size") or min((meta.get("shapes") or {}).get("train", [0, 0, 0])[1:] or [0])
    if aug.scale_jitter is not None and stored and stored < aug.scale_jitter.max_size:
        notes.append(f"{where}: scale_jitter up to a shorter side of {aug.scale_jitter.max_size} from a store of "
                     f"shorter side {stored}: an approximation (the store is upsampled, not the original image)")
    return problems, notes
