"""Batches on the device: a prepared split shuffled by a seeded generator, augmented and
normalised on the device. Outside the prepare stages' DVC deps: a loader edit re-prepares nothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---- batches on the device ------------------------------------------------------------------------
# torch is imported inside these functions: `prepare` (and its worker processes) never needs it.


@dataclass(frozen=True)
class Augment:
    """Batch augmentation. He et al. 2016 Sec. 4.1 (after Lee et al. 2015): 4 px zero padding,
    a random 32x32 crop and a random horizontal flip."""

    crop_pad: int = 0
    flip: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment | None":
        return cls(**d) if d else None


def to_device(t, device):
    """A host tensor (the CPU generator's draws) on `device` without waiting: on CUDA it is copied from
    pinned memory asynchronously (the caching host allocator keeps the pinned block until the copy
    is done), so the host keeps queueing work ahead of the GPU."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def crop_windows(padded, index, pad: int, gen):
    """Images `index` of a zero-padded stack, each cropped at its own random offset: one gather.

    padded: N x C x (H+2p) x (W+2p). `unfold` views it as N x C x (2p+1) x (2p+1) x H x W
    (every window, no copy); indexing (image, dy, dx) per row copies out B x C x H x W.
    """
    import torch

    _, _, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    b = len(index)
    dy = to_device(torch.randint(0, 2 * pad + 1, (b,), generator=gen), padded.device)
    dx = to_device(torch.randint(0, 2 * pad + 1, (b,), generator=gen), padded.device)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[index, :, dy, dx]


def random_flip(x, gen):
    """Mirror a random half of the batch left-right (x: B x C x H x W).

    A select, not boolean-mask indexing: `x[m]` needs the mask's count on the host (a nonzero, which
    waits for the GPU); `torch.where` has a fixed shape."""
    import torch

    m = to_device(torch.rand(x.shape[0], generator=gen) < 0.5, x.device)
    return torch.where(m.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop_flip(x, aug: Augment, gen):
    """Zero-pad by `crop_pad` and crop back to H x W at a random offset per image, then flip half."""
    import torch

    if aug.crop_pad:
        p = aug.crop_pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, as in the paper
        x = crop_windows(padded, torch.arange(len(x), device=x.device), p, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return x


def default_resident_bytes(device) -> int:
    """Half the memory free on `device` now: CUDA's free memory, or the host's available memory."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    import psutil

    return psutil.virtual_memory().available // 2


class DeviceLoader:
    """Batches of one split: shuffled by a seeded generator, augmented and normalised on `device`.

    A split whose (padded) uint8 bytes fit `max_resident_bytes` is copied to the device once and
    batches are gathered there. A larger one stays where it is (an np.memmap from `load_prepared`, so
    on disk and in the page cache): each batch's rows are gathered on the host (pinned for CUDA),
    moved to the device and padded there. Both modes draw the same random numbers in the same order,
    so they yield identical batches.

    Deterministic: epoch e of seed s always yields the same batches (`set_epoch`).
    """

    def __init__(self, x_uint8, y, *, batch_size: int, shuffle: bool, seed: int, mean, std,
                 augment: Augment | None = None, device="cpu", drop_last: bool = False,
                 max_resident_bytes: int | None = None):
        import torch

        x = torch.from_numpy(x_uint8) if isinstance(x_uint8, np.ndarray) else x_uint8
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected uint8 N x C x H x W images, got {x.dtype} {tuple(x.shape)}")
        self.device = torch.device(device)
        self.augment = augment if augment and (augment.crop_pad or augment.flip) else None
        self.pad = p = self.augment.crop_pad if self.augment else 0
        n, c, h, w = x.shape
        padded_bytes = n * c * (h + 2 * p) * (w + 2 * p)
        budget = default_resident_bytes(self.device) if max_resident_bytes is None else max_resident_bytes
        self.resident = padded_bytes <= budget
        if self.resident:
            # Zero-padded once for the whole split (uint8, on the device), not once per batch.
            x = x.to(self.device)
            self.x = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        else:
            self.x = x  # stays on the host (memory-mapped): only each batch's rows are read
        self.y = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        # Normalise as (x/255 - mean)/std = x * scale + shift, per channel: shape 1 x C x 1 x 1.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _generator(self):
        import torch

        # CPU generator on every device: the same stream on CPU and GPU for a (seed, epoch).
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def _host_batch(self, idx_cpu):
        """B x C x (H+2p) x (W+2p) uint8 on the device: rows gathered from the host split, then padded."""
        import torch

        xb = self.x.index_select(0, idx_cpu)  # reads only these rows' pages of a memory map
        if self.device.type == "cuda":
            xb = xb.pin_memory().to(self.device, non_blocking=True)
        else:
            xb = xb.to(self.device)
        p = self.pad
        return torch.nn.functional.pad(xb, (p, p, p, p)) if p else xb

    def __iter__(self):
        import torch

        gen = self._generator()
        n = len(self.y)
        order_cpu = torch.randperm(n, generator=gen) if self.shuffle else None
        order = to_device(order_cpu, self.device) if order_cpu is not None and self.resident else order_cpu
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min(n, (i + 1) * self.batch_size)
            if self.resident:
                idx = order[lo:hi] if order is not None else torch.arange(lo, hi, device=self.device)
                src, rows = self.x, idx
            else:
                idx_cpu = order_cpu[lo:hi] if order_cpu is not None else torch.arange(lo, hi)
                src = self._host_batch(idx_cpu)
                rows = torch.arange(hi - lo, device=self.device)
                idx = to_device(idx_cpu, self.device)
            x = crop_windows(src, rows, self.pad, gen) if self.pad else (src[rows] if self.resident else src)
            if self.augment and self.augment.flip:
                x = random_flip(x, gen)
            # In place on the fresh float copy: one allocation per batch.
            yield x.float().mul_(self.scale).add_(self.shift), self.y[idx]
