"""Batches on the device: a prepared split in a seeded order, sharded by rank, augmented and normalised on
the device, prefetched by a background thread. Outside the prepare stages' DVC deps: a loader edit
re-prepares nothing.

Order and sharding: epoch e of seed s draws one global permutation from a CPU generator seeded with
s * 1,000,003 + e; rank r of `world_size` takes perm[r::world_size] (in global batches of
batch_size * world_size, so every rank takes the same number of steps; the last global batch is
dropped when it holds fewer images than ranks). Rank 0's augmentation draws continue that generator
(so one rank yields exactly the single-process stream); rank r > 0 reseeds it from (s, r, e). In
evaluation (shuffle False) rank r takes images r, r + world_size, ...: together the ranks see every
image exactly once, no padding.

Prefetch: a background thread makes batches ahead into a bounded queue; each batch's rows are gathered
from the host split into one of `prefetch + 1` preallocated host buffers (pinned on CUDA), copied to the
device on a side CUDA stream and augmented there; the consumer's stream waits on the batch's event.
The same code runs on CPU (thread, ring, no streams; inline by default there, where a producer thread
only competes with training for the cores), and `prefetch=0` runs it inline: the batches are identical
either way.
"""

from __future__ import annotations

import contextlib
import queue
import threading

import numpy as np
import torch

from resnet_bench.data.augment import (Augment, color_jitter, crop_resize, crop_windows, flip_mask, jitter_params,
                                       lighting_offsets, oriented, plans, random_flip, to_device)

PREFETCH_BATCHES = 2  # CUDA: batches made ahead of the one in use, hiding a host gather + copy behind a step


def default_resident_bytes(device) -> int:
    """Half the memory free on `device` now: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    import psutil

    return psutil.virtual_memory().available // 2


@contextlib.contextmanager
def _one_thread(enabled: bool):
    """Intra-op threads 1 for the block: the per-image crop-resize on CPU issues a few small ops per image,
    each of which would fork the OpenMP team; on busy cores every fork waits for a descheduled thread
    (measured: 13 vs 235 img/s at load 19 on 2 cores, docs/benchmarks/loader.md). Only used inline,
    where no other thread runs torch ops (the count is process-wide); each image's values do not depend
    on it (every output pixel is computed alone)."""
    if not enabled:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shard_indices(n: int, *, shuffle: bool, gen, rank: int, world_size: int, batch_size: int,
                  drop_last: bool) -> list[torch.Tensor]:
    """This rank's batches of row indices (CPU int64), see the module docstring."""
    if not shuffle:
        mine = torch.arange(n)[rank::world_size]
        size = batch_size
    else:
        perm = torch.randperm(n, generator=gen)
        size = batch_size * world_size  # global batches, each split over the ranks
        usable = n if world_size == 1 else n - (n % size if n % size < world_size else 0)
        mine = perm[:usable]
    batches = [mine[i:i + size] for i in range(0, len(mine), size)]
    if shuffle and world_size > 1:
        batches = [b[rank::world_size] for b in batches]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches = batches[:-1]
    return batches


class DeviceLoader:
    """Batches of one split: ordered and sharded by a seeded generator, augmented and normalised on `device`.

    A split whose (padded) uint8 bytes fit `max_resident_bytes` is copied to the device once and
    batches are gathered there. A larger one stays where it is (an np.memmap from `load_prepared`, so
    on disk and in the page cache): each batch's rows are gathered on the host into a ring buffer,
    moved to the device and augmented there. Both modes draw the same random numbers in the same order,
    so they yield identical batches.

    `extents` (N x 3 int: height, width, transposed) are the train store's true image extents; None
    means every image fills its row. Deterministic: epoch e of seed s always yields the same batches
    (`set_epoch`); `epochs` is the training length a resolution schedule refers to.
    """

    def __init__(self, x_uint8, y, *, batch_size: int, shuffle: bool, seed: int, mean, std,
                 augment: Augment | None = None, extents=None, epochs: int = 1, device="cpu",
                 drop_last: bool = False, max_resident_bytes: int | None = None, rank: int = 0,
                 world_size: int = 1, prefetch: int | None = None, resample: str | None = None):
        x = torch.from_numpy(x_uint8) if isinstance(x_uint8, np.ndarray) else x_uint8
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected uint8 N x C x H x W images, got {x.dtype} {tuple(x.shape)}")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank {rank!r} of world_size {world_size!r}: need integers 0 <= rank < world_size")
        self.device = torch.device(device)
        self.augment = augment if augment is not None and augment.active() else None
        if extents is not None and not (self.augment and self.augment.crops):
            raise ValueError("images with their own extents (a train store that keeps aspect ratios) need a "
                             "resizing crop: augment.resized_crop or augment.scale_jitter")
        if self.augment and self.augment.crops and self.augment.crop_pad:
            raise ValueError("augment.crop_pad and a resizing crop exclude each other")
        self.pad = p = self.augment.crop_pad if self.augment else 0
        n, c, h, w = x.shape
        if self.augment and self.augment.crops:
            ext = torch.as_tensor(np.asarray(extents)) if extents is not None else \
                torch.tensor([[h, w, 0]]).expand(n, 3)
            self.extents = ext.to(torch.int64)
        else:
            self.extents = None
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
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        # On CPU a producer thread would only compete with the training threads for the same cores (and
        # two OpenMP teams on two cores wait on each other at every op): inline there unless asked.
        if prefetch is None:
            prefetch = PREFETCH_BATCHES if self.device.type == "cuda" else 0
        self.rank, self.world_size, self.prefetch, self.epochs = rank, world_size, max(0, int(prefetch)), epochs
        self.resample = resample or ("per_image" if self.device.type == "cpu" else "matmul")
        # Normalise as (x/255 - mean)/std = x * scale + shift, per channel: shape 1 x C x 1 x 1.
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * self.std), -self.mean / self.std
        self.epoch = 0
        self._ring = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def out_size(self) -> int | None:
        """Side of this epoch's output images (None: the stored size)."""
        return self.augment.out_size(max(1, self.epoch), self.epochs) if self.augment and self.augment.crops else None

    def _batches(self, gen) -> list[torch.Tensor]:
        return shard_indices(len(self.y), shuffle=self.shuffle, gen=gen, rank=self.rank, world_size=self.world_size,
                             batch_size=self.batch_size, drop_last=self.drop_last)

    def __len__(self) -> int:
        return len(self._batches(self._generator()))

    def _generator(self):
        # CPU generator on every device: the same stream on CPU and GPU for a (seed, epoch).
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def _augment_generator(self, gen):
        if self.rank:
            gen.manual_seed((self.seed * 1_000_003 + self.epoch) * 65_537 + self.rank)
        return gen

    # ---- one batch ----------------------------------------------------------------------------------

    def _ring_slots(self):
        """prefetch + 1 host buffers of one batch of rows (pinned for CUDA): gathered into, then copied."""
        if self._ring is None:
            shape = (self.batch_size, *self.x.shape[1:])
            pin = self.device.type == "cuda"
            self._ring = [torch.empty(shape, dtype=torch.uint8, pin_memory=pin) for _ in range(self.prefetch + 1)]
            self._ring_events = [None] * len(self._ring)
        return self._ring

    def _rows(self, idx_cpu: torch.Tensor, slot: int):
        """(source, index): the batch's rows are source[index] on the device (uint8, with the crop_pad zero
        border): the resident split and the rows' indices, or the rows gathered through the ring."""
        if self.resident:
            return self.x, to_device(idx_cpu, self.device)
        ring = self._ring_slots()
        b = len(idx_cpu)
        host = ring[slot][:b]
        if self._ring_events[slot] is not None:
            self._ring_events[slot].synchronize()  # the copy that last read this buffer has finished
        # Reads only these rows' pages of a memory map. On CPU the buffer is dead once the batch is
        # made (every step below writes a new tensor), so the next batch may overwrite it.
        torch.index_select(self.x, 0, idx_cpu, out=host)
        xb = host
        if self.device.type == "cuda":
            xb = host.to(self.device, non_blocking=True)
            self._ring_events[slot] = torch.cuda.Event()
            self._ring_events[slot].record()
        p = self.pad
        return (torch.nn.functional.pad(xb, (p, p, p, p)) if p else xb), torch.arange(b, device=self.device)

    def _normalise(self, x):
        # In place on the fresh float copy: one allocation per batch.
        return x.float().mul_(self.scale).add_(self.shift)

    def _make(self, idx_cpu: torch.Tensor, slot: int, gen):
        aug = self.augment
        if aug is not None and aug.crops and self.resample == "per_image" and self.device.type == "cpu":
            # Each image's window is read straight from the (memory-mapped) split: gathering whole rows
            # into the ring first would copy the 256 x 341 slot to use the crop of it.
            src, index = self.x, idx_cpu
        else:
            src, index = self._rows(idx_cpu, slot)
        labels = self.y[to_device(idx_cpu, self.device)]
        if aug is None or not aug.crops:
            x = crop_windows(src, index, self.pad, gen) if self.pad else src[index]
            if aug is not None and aug.flip:
                x = random_flip(x, gen)
            return self._normalise(x), labels
        ext = self.extents[idx_cpu]
        t = ext[:, 2]
        height, width = torch.where(t.bool(), ext[:, 1], ext[:, 0]), torch.where(t.bool(), ext[:, 0], ext[:, 1])
        rows, cols = oriented(*plans(height, width, aug, self.out_size(), gen), t)
        flip = flip_mask(len(idx_cpu), gen) if aug.flip else None
        with _one_thread(self.resample == "per_image" and self.prefetch == 0):
            if not aug.colour:
                return crop_resize(src, index, rows, cols, self.out_size(), t, self.resample, flip=flip,
                                   normalise=(self.scale, self.shift)), labels
            x = crop_resize(src, index, rows, cols, self.out_size(), t, self.resample, flip=flip)
        x01 = x.float().div_(255.0)
        if aug.color_jitter is not None:
            x01 = color_jitter(x01, *jitter_params(len(x01), aug.color_jitter, gen))
        if aug.lighting is not None:
            x01 = x01 + to_device(lighting_offsets(len(x01), aug.lighting, gen), self.device).view(-1, 3, 1, 1)
        return (x01 - self.mean).div_(self.std), labels

    # ---- iteration ----------------------------------------------------------------------------------

    def _produce(self, stream):
        """(x, y, ready event) of every batch of this epoch, in order; the only user of the generators."""
        gen = self._generator()
        batches = self._batches(gen)
        gen = self._augment_generator(gen)
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        for i, idx in enumerate(batches):
            with ctx:
                x, y = self._make(idx, i % (self.prefetch + 1), gen)
                event = None
                if stream is not None:
                    event = torch.cuda.Event()
                    event.record(stream)
            yield x, y, event

    def __iter__(self):
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self.prefetch == 0:
            for x, y, event in self._produce(stream):
                yield self._hand_over(x, y, event)
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work():
            try:
                for item in self._produce(stream):
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as err:  # handed to the consumer, raised there
                q.put(err)

        thread = threading.Thread(target=work, name="DeviceLoader-prefetch", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield self._hand_over(*item)
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    q.get(timeout=0.1)
            thread.join()

    def _hand_over(self, x, y, event):
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            x.record_stream(current)  # made on the side stream, used on this one: keep it until then
            y.record_stream(current)
        return x, y
