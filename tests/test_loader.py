"""The training loader: seeded order, rank shards (train: one global permutation, perm[r::world]; eval:
every image exactly once), a prefetching thread over a ring of host buffers that yields exactly the
inline batches, the single-process stream kept, bounded memory on an artifact larger than memory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_bench.data import augment as device_augment
from resnet_bench.data.augment import Augment, ColorJitter, Lighting, ResizedCrop, ResolutionSchedule
from resnet_bench.data.loader import DeviceLoader, shard_indices

# ---- the on-device loader --------------------------------------------------------------------


def loader(x, **kw):
    args = dict(batch_size=4, shuffle=True, seed=0, mean=[0.5], std=[0.25], augment=None)
    args.update(kw)
    return DeviceLoader(x, torch.arange(len(x)), **args)


def test_loader_without_augmentation_is_the_normalised_input():
    x = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8)
    batches = list(loader(x, shuffle=False))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    got = torch.cat([b[0] for b in batches])
    assert torch.allclose(got, (x.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_loader_shuffle_is_deterministic_per_seed_and_epoch():
    x = torch.randint(0, 256, (32, 1, 4, 4), dtype=torch.uint8)
    order = lambda l, e: (l.set_epoch(e), torch.cat([y for _, y in l]).tolist())[1]
    a, b, c = loader(x), loader(x), loader(x, seed=1)
    assert order(a, 1) == order(b, 1) and order(a, 1) != order(a, 2) and order(a, 1) != order(c, 1)
    assert sorted(order(a, 3)) == list(range(32))


def test_flip_and_zero_padded_crop():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    gen = torch.Generator().manual_seed(0)
    flipped = device_augment.random_crop_flip(x, Augment(flip=True), gen)
    is_flip = [(f == x[0].flip(2)).all().item() for f in flipped]
    is_same = [(f == x[0]).all().item() for f in flipped]
    assert all(a or b for a, b in zip(is_flip, is_same)) and 10 < sum(is_flip) < 54
    cropped = device_augment.random_crop_flip(x, Augment(crop_pad=2), gen)
    assert cropped.shape == x.shape
    # each crop is a window of the zero-padded image: its non-zero pixels are a contiguous shift
    padded = torch.nn.functional.pad(x[0, 0], (2, 2, 2, 2))
    windows = {tuple(padded[i:i + 4, j:j + 4].flatten().tolist()) for i in range(5) for j in range(5)}
    assert all(tuple(c[0].flatten().tolist()) in windows for c in cropped)
    assert any((c == 0).any() for c in cropped) and len({tuple(c.flatten().tolist()) for c in cropped}) > 5



# ---- the loader on an artifact larger than its memory --------------------------------------------------


@pytest.mark.parametrize("augment", [None, Augment(crop_pad=2, flip=True)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_streaming_loader_yields_the_resident_loaders_batches(augment, shuffle):
    x = np.random.default_rng(0).integers(0, 256, (37, 3, 6, 6), dtype=np.uint8)
    kw = dict(batch_size=8, shuffle=shuffle, seed=3, mean=[0.5] * 3, std=[0.25] * 3, augment=augment)
    resident = DeviceLoader(torch.from_numpy(x.copy()), torch.arange(37), **kw)
    streaming = DeviceLoader(x, torch.arange(37), max_resident_bytes=0, **kw)
    assert resident.resident and not streaming.resident
    for epoch in (1, 2):
        resident.set_epoch(epoch)
        streaming.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(resident, streaming, strict=True):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)


MEMORY_PROBE = r"""
import sys, numpy as np, torch
from resnet_bench.data.artifact import load_prepared
from resnet_bench.data.augment import Augment
from resnet_bench.data.loader import DeviceLoader

def anon_kb():  # private (anonymous) memory: excludes the file pages of the memory map
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1])

torch.set_num_threads(1)
ds = load_prepared(sys.argv[1])
loader = DeviceLoader(ds.train_x, ds.train_y, batch_size=256, shuffle=True, seed=0, mean=[0.5] * 3,
                      std=[0.25] * 3, augment=Augment(crop_pad=4, flip=True), max_resident_bytes=8 << 20)
peak, seen, start = 0, 0, None
for xb, yb in loader:
    seen += len(yb)
    if start is None:  # after the first batch: torch's one-time kernel/thread-pool setup is done
        start = anon_kb()
    peak = max(peak, anon_kb())
print(loader.resident, seen, (peak - start) * 1024, ds.train_x.nbytes)
"""


def test_loader_trains_from_an_artifact_larger_than_its_memory(tmp_path):
    n = 20_000  # 20,000 x 3 x 32 x 32 = 61 MB of train images, 8 MiB allowed resident
    art = tmp_path / "big"
    art.mkdir()
    x = np.lib.format.open_memmap(art / "train_x.npy", "w+", np.uint8, (n, 3, 32, 32))
    for i in range(0, n, 5000):
        x[i:i + 5000] = np.random.default_rng(i).integers(0, 256, (min(5000, n - i), 3, 32, 32), dtype=np.uint8)
    x.flush()
    del x
    np.save(art / "train_y.npy", np.arange(n) % 10)
    for s in ("val", "test"):
        np.save(art / f"{s}_x.npy", np.zeros((0, 3, 32, 32), np.uint8))
        np.save(art / f"{s}_y.npy", np.zeros(0, np.int64))
    (art / "meta.json").write_text(json.dumps({"name": "big", "format": "test", "counts": {"train": n, "val": 0,
                                                                                         "test": 0}}))
    # glibc's malloc keeps freed batch buffers in its heap (a high-water mark that varied from
    # 12 to 18 MB between runs); a fixed mmap threshold returns every large buffer to the system
    # when freed, so anonymous memory measures what the loader holds (about 1 MB here).
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(art)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    resident, seen, grew, nbytes = proc.stdout.split()
    assert resident == "False" and int(seen) == n
    # A resident copy would add the padded split (61 MB -> 98 MB); streaming adds a few batches.
    assert int(grew) < int(nbytes) // 4, (grew, nbytes)


# ---- the stream, shards and prefetch -----------------------------------------------------------------


def single_process_stream(x, seed, epoch, batch_size, pad, flip, mean, std):
    """The loader's stream before sharding and prefetch existed (one process, inline): the reference."""
    gen = torch.Generator()
    gen.manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(x), generator=gen)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = []
    for lo in range(0, len(x), batch_size):
        idx = order[lo:lo + batch_size]
        b = device_augment.crop_windows(padded, idx, pad, gen)
        if flip:
            b = device_augment.random_flip(b, gen)
        out.append(((b.float() / 255 - mean) / std, idx))
    return out


def test_one_rank_yields_the_single_process_stream():
    x = torch.randint(0, 256, (45, 3, 8, 8), dtype=torch.uint8)
    for resident in (True, False):
        ld = DeviceLoader(x, torch.arange(45), batch_size=8, shuffle=True, seed=7, mean=[0.5] * 3, std=[0.25] * 3,
                          augment=Augment(crop_pad=2, flip=True), max_resident_bytes=None if resident else 0,
                          prefetch=2)
        ld.set_epoch(3)
        want = single_process_stream(x, 7, 3, 8, 2, True, 0.5, 0.25)
        for (xa, ya), (xb, yb) in zip(ld, want, strict=True):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-6)


def _imagenet_like(n=30, seed=0):
    """A padded 12 x 18 train store with its extents (landscape, portrait stored transposed, square)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 12, 18), np.uint8)
    ext = np.array([[12, 18, 0], [12, 15, 1], [12, 12, 0]] * (n // 3), np.int32)
    for i, (h, w, _) in enumerate(ext):
        x[i, :, :h, :w] = rng.integers(1, 256, (3, h, w))
    return x, ext


IMAGENET_AUG = Augment(flip=True, resized_crop=ResizedCrop(8, (0.08, 1.0), (3 / 4, 4 / 3)),
                       color_jitter=ColorJitter(0.4, 0.4, 0.4), lighting=Lighting(0.1))


@pytest.mark.parametrize("case", ["crop_pad", "imagenet", "imagenet-matmul", "imagenet-rank1of3", "eval"])
def test_prefetch_on_and_off_give_identical_batches(case):
    x, ext = _imagenet_like()
    kw = dict(batch_size=7, shuffle=case != "eval", seed=2, mean=[0.4] * 3, std=[0.2] * 3)
    if case == "crop_pad":
        kw.update(augment=Augment(crop_pad=2, flip=True))
    elif case.startswith("imagenet"):
        kw.update(augment=IMAGENET_AUG, extents=ext, resample="matmul" if case.endswith("matmul") else None)
    if case.endswith("rank1of3"):
        kw.update(rank=1, world_size=3)
    for resident_bytes in (None, 0):  # resident on the device, and streamed through the ring
        runs = []
        for prefetch in (0, 1, 3):
            ld = DeviceLoader(x, torch.arange(len(x)), prefetch=prefetch, max_resident_bytes=resident_bytes, **kw)
            ld.set_epoch(2)
            runs.append(list(ld))
        assert len(runs[0]) == len(ld) > 0
        for other in runs[1:]:
            for (xa, ya), (xb, yb) in zip(runs[0], other, strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("n, world, batch", [(103, 4, 5), (96, 3, 8), (10, 4, 3), (7, 1, 3)])
def test_train_shards_partition_one_global_permutation(n, world, batch):
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    perm = torch.randperm(n, generator=gen())
    shards = [shard_indices(n, shuffle=True, gen=gen(), rank=r, world_size=world, batch_size=batch, drop_last=False)
              for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(seen) == len(set(seen.tolist()))  # no image twice
    size = batch * world
    dropped = n % size if n % size < world and world > 1 else 0  # a last global batch smaller than the ranks
    assert len(seen) == n - dropped and set(seen.tolist()) == set(perm[:n - dropped].tolist())
    for r in range(world):  # rank r holds perm[r::world] of the global order
        assert torch.equal(torch.cat(shards[r]), perm[:n - dropped][r::world])


@pytest.mark.parametrize("n, world", [(103, 4), (5, 8), (64, 1)])
def test_eval_shards_cover_every_image_exactly_once(n, world):
    x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    seen = []
    for r in range(world):
        ld = DeviceLoader(x, torch.arange(n), batch_size=6, shuffle=False, seed=0, mean=[0.5], std=[0.5], rank=r,
                          world_size=world)
        seen += torch.cat([y for _, y in ld]).tolist() if len(ld) else []
    assert sorted(seen) == list(range(n))


def test_ranks_and_epochs_draw_their_own_augmentation():
    x, ext = _imagenet_like(30)
    def first_batch(rank, epoch):
        ld = DeviceLoader(x, torch.arange(30), batch_size=5, shuffle=True, seed=1, mean=[0.5] * 3, std=[0.5] * 3,
                          augment=IMAGENET_AUG, extents=ext, rank=rank, world_size=2)
        ld.set_epoch(epoch)
        return next(iter(ld))
    a, b, c = first_batch(0, 1), first_batch(1, 1), first_batch(0, 2)
    assert not set(a[1].tolist()) & set(b[1].tolist())  # disjoint shards of one permutation
    assert not torch.equal(a[0], c[0]) and torch.equal(first_batch(1, 1)[0], b[0])


def test_the_prefetch_thread_ends_on_break_and_hands_errors_to_the_consumer():
    import threading

    x, ext = _imagenet_like(30)
    ld = DeviceLoader(x, torch.arange(30), batch_size=4, shuffle=True, seed=0, mean=[0.5] * 3, std=[0.5] * 3,
                      augment=IMAGENET_AUG, extents=ext, prefetch=2)
    for _ in ld:
        break
    assert not [t for t in threading.enumerate() if t.name == "DeviceLoader-prefetch"]
    ld.extents = ld.extents[:5]  # rows 5.. have no extent: the producer fails on the first batch that needs one
    with pytest.raises(IndexError):
        list(ld)
    assert not [t for t in threading.enumerate() if t.name == "DeviceLoader-prefetch"]


def test_a_store_with_extents_needs_a_resizing_crop_and_the_schedule_sets_the_size():
    x, ext = _imagenet_like(9)
    with pytest.raises(ValueError, match="need a resizing crop"):
        DeviceLoader(x, torch.arange(9), batch_size=3, shuffle=True, seed=0, mean=[0.5] * 3, std=[0.5] * 3,
                     augment=Augment(crop_pad=2), extents=ext)
    sched = Augment(resized_crop=ResizedCrop(8, (0.5, 1.0), (3 / 4, 4 / 3)),
                    resolution_schedule=ResolutionSchedule(6, 10, 0.25, 0.75, 2))
    ld = DeviceLoader(x, torch.arange(9), batch_size=3, shuffle=True, seed=0, mean=[0.5] * 3, std=[0.5] * 3,
                      augment=sched, extents=ext, epochs=4)
    sides = []
    for epoch in (1, 2, 3, 4):
        ld.set_epoch(epoch)
        sides.append(next(iter(ld))[0].shape[-1])
    assert sides == [6, 6, 8, 10]  # FFCV: min_res to the ramp start, linear in steps of 2, max_res from its end
