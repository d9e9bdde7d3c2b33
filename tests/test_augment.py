"""On-device augmentation against its references: torchvision's RandomResizedCrop boxes (KS tests over
20,000 seeded draws), its v2 resized_crop and resize (the crop-resize, both implementations), its
ColorJitter formulas, fb.resnet.torch's PCA lighting, FFCV's resolution schedule; crops stay inside the
true extent of images stored padded and transposed."""

import functools

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF1
from torchvision.transforms.v2 import functional as TF

from resnet_bench.data import augment as aug

DRAWS = 20_000
# Two-sample KS at this size: a real difference in the distributions (e.g. uniform instead of
# log-uniform aspect, or area without the 10-try rejection) gives p << 1e-6; equal ones p ~ U(0, 1).
KS_ALPHA = 1e-3


@functools.cache
def torchvision_boxes(height: int, width: int, scale: tuple, ratio: tuple) -> np.ndarray:
    """DRAWS boxes (top, left, h, w) of RandomResizedCrop.get_params, seeded."""
    torch.manual_seed(0)
    img = torch.zeros(1, height, width)
    return np.array([RandomResizedCrop.get_params(img, scale=list(scale), ratio=list(ratio)) for _ in range(DRAWS)])


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 n x 3 x h x w: upsampled noise (natural-image-like spectra, so that filters matter)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 256, (n, 3, max(2, h // 5), max(2, w // 5)), generator=g).float()
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic").round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("height, width, scale, ratio", [
    (224, 224, (0.08, 1.0), (3 / 4, 4 / 3)),
    (256, 341, (0.08, 1.0), (3 / 4, 4 / 3)),  # a 4:3 store slot
    (160, 60, (0.35, 1.0), (0.5, 2.0)),       # tall: many of the 10 tries miss, the fallback shows
])
def test_resized_crop_boxes_follow_torchvision_get_params(height, width, scale, ratio):
    ref = torchvision_boxes(height, width, scale, ratio)
    gen = torch.Generator().manual_seed(1)
    ours = aug.resized_crop_boxes(torch.full((DRAWS,), height), torch.full((DRAWS,), width),
                                  aug.ResizedCrop(224, scale, ratio), gen).numpy()
    for name, f in (("area fraction", lambda b: b[:, 2] * b[:, 3] / (height * width)),
                    ("log aspect", lambda b: np.log(b[:, 3] / b[:, 2])),
                    ("top fraction", lambda b: b[:, 0] / height), ("left fraction", lambda b: b[:, 1] / width)):
        assert ks_2samp(f(ref), f(ours)).pvalue > KS_ALPHA, name
    t, l, h, w = ours.T
    assert (t >= 0).all() and (l >= 0).all() and (t + h <= height).all() and (l + w <= width).all()


def test_box_sampler_is_not_a_lookalike():
    """The KS test sees a plausible mistake: the aspect drawn uniformly (fb.resnet.torch's) instead of log-uniformly."""
    ref = torchvision_boxes(224, 224, (0.08, 1.0), (3 / 4, 4 / 3))
    gen = torch.Generator().manual_seed(1)
    # uniform(r) instead of exp(uniform(log r)), through the same fit test
    u = torch.rand(DRAWS, generator=gen, dtype=torch.float64)
    aspect = 3 / 4 + (4 / 3 - 3 / 4) * u
    area = 224 * 224 * (0.08 + 0.92 * torch.rand(DRAWS, generator=gen, dtype=torch.float64))
    w, h = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    ok = (w <= 224) & (h <= 224)
    wrong = np.log((w[ok] / h[ok]).numpy())
    assert ks_2samp(np.log(ref[:, 3] / ref[:, 2]), wrong).pvalue < 1e-6


@pytest.mark.parametrize("method", ["matmul", "per_image"])
def test_crop_resize_equals_torchvision_v2_resized_crop_on_the_same_box(method):
    """Tolerance: per_image (uint8, the ATen kernel torchvision v2 calls on CPU) is exact; matmul (float,
    batched) within 2e-3 of torchvision on float input, both antialiased bilinear."""
    x = smooth_images(48, 40, 56)
    boxes = aug.resized_crop_boxes(torch.full((48,), 40), torch.full((48,), 56),
                                   aug.ResizedCrop(24, (0.08, 1.0), (3 / 4, 4 / 3)), torch.Generator().manual_seed(3))
    t, l, h, w = boxes.unbind(1)
    full, zero = torch.full((48,), 24), torch.zeros(48, dtype=torch.int64)
    got = aug.crop_resize(x, torch.arange(48), aug.AxisPlan(t, h, full, zero), aug.AxisPlan(l, w, full, zero), 24,
                          torch.zeros(48, dtype=torch.int64), method)
    src = x if method == "per_image" else x.float()
    want = torch.stack([TF.resized_crop(src[i], int(t[i]), int(l[i]), int(h[i]), int(w[i]), [24, 24], antialias=True)
                        for i in range(48)])
    assert bool((h > 24).any()) and bool((h < 24).any())  # both down- and upsampling boxes
    if method == "per_image":
        assert got.dtype == torch.uint8 and torch.equal(got, want)
    else:
        assert (got - want).abs().max().item() < 2e-3


@pytest.mark.parametrize("method", ["matmul", "per_image"])
def test_transposed_storage_and_padding_are_invisible(method):
    """A portrait image stored transposed in a zero-padded slot gives the crop of the original image."""
    portrait = smooth_images(1, 30, 20, seed=5)[0]   # 3 x 30 x 20
    slot = torch.zeros(1, 3, 20, 36, dtype=torch.uint8)  # stored: 20 rows, 30 of 36 columns used
    slot[0, :, :, :30] = portrait.transpose(1, 2)
    rows, cols = aug.AxisPlan(*(torch.tensor([v]) for v in (4, 22, 16, 0))), \
        aug.AxisPlan(*(torch.tensor([v]) for v in (3, 15, 16, 0)))
    stored_rows, stored_cols = aug.oriented(rows, cols, torch.tensor([1]))
    got = aug.crop_resize(slot, torch.tensor([0]), stored_rows, stored_cols, 16, torch.tensor([1]), method)
    src = portrait if method == "per_image" else portrait.float()
    want = TF.resized_crop(src, 4, 3, 22, 15, [16, 16], antialias=True)
    tol = 1 if method == "per_image" else 2e-3  # uint8: the two passes round in the other order
    assert (got[0].float() - want.float()).abs().max().item() <= tol


def test_boxes_stay_inside_each_images_true_extent():
    height, width = torch.tensor([20, 24, 24] * 1000), torch.tensor([36, 24, 30] * 1000)
    t, l, h, w = aug.resized_crop_boxes(height, width, aug.ResizedCrop(16, (0.08, 1.0), (0.75, 4 / 3)),
                                        torch.Generator().manual_seed(0)).unbind(1)
    assert bool(((t + h) <= height).all()) and bool(((l + w) <= width).all()) and bool((t >= 0).all())
    assert bool(((l + w) == width).any())  # the right edge is reachable, not cut off


def test_scale_jitter_equals_resize_then_crop():
    """He et al. 2015's scale augmentation: Resize(t) of the whole image, then a crop at the drawn offset."""
    x = smooth_images(6, 40, 52)
    sj = aug.Augment(scale_jitter=aug.ScaleJitter(48, 64, 32))
    rows, cols = aug.plans(torch.full((6,), 40), torch.full((6,), 52), sj, 32, torch.Generator().manual_seed(2))
    for method, src, tol in (("per_image", x, 0), ("matmul", x.float(), 2e-3)):
        got = aug.crop_resize(x, torch.arange(6), rows, cols, 32, torch.zeros(6, dtype=torch.int64), method)
        for i in range(6):
            short = int(rows.total[i]) if int(rows.total[i]) <= int(cols.total[i]) else int(cols.total[i])
            assert 48 <= short <= 64
            resized = TF.resize(src[i], [short], antialias=True)
            want = resized[:, int(rows.offset[i]):int(rows.offset[i]) + 32, int(cols.offset[i]):int(cols.offset[i]) + 32]
            assert resized.shape[1:] == (int(rows.total[i]), int(cols.total[i]))
            assert (got[i].float() - want.float()).abs().max().item() <= tol, method


def test_color_jitter_equals_torchvision_functional_ops():
    x = smooth_images(8, 12, 10).float() / 255
    factors, order = aug.jitter_params(8, aug.ColorJitter(0.4, 0.4, 0.4), torch.Generator().manual_seed(0))
    got = aug.color_jitter(x, factors, order)
    ops = (TF1.adjust_brightness, TF1.adjust_contrast, TF1.adjust_saturation)
    for i in range(8):
        want = x[i]
        for op in order[i].tolist():
            want = ops[op](want, float(factors[i, op]))
        assert (got[i] - want).abs().max().item() < 1e-6
    assert ((factors >= 0.6) & (factors <= 1.4)).all() and len({tuple(o) for o in order.tolist()}) > 1


def test_lighting_is_fb_resnet_torch_lighting():
    """transforms.lua Lighting: rgb = eigvec:cmul(alpha:expand):cmul(eigval:expand):sum(2), added per channel."""
    offsets = aug.lighting_offsets(5, aug.Lighting(0.1), torch.Generator().manual_seed(0))
    alpha = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    eigval, eigvec = np.array(aug.PCA_EIGVAL), np.array(aug.PCA_EIGVEC)
    want = np.stack([(eigvec * a[None, :] * eigval[None, :]).sum(1) for a in alpha])  # the Lua, line by line
    assert np.allclose(offsets.numpy(), want, atol=1e-7)
    assert aug.PCA_EIGVAL == (0.2175, 0.0188, 0.0045) and aug.PCA_EIGVEC[0] == (-0.5675, 0.7192, 0.4009)


def test_resolution_schedule_is_ffcvs():
    """ffcv-imagenet train_imagenet.py get_resolution with rn50_88_epochs.yaml (160 -> 192, ramp 65..76)."""
    s = aug.ResolutionSchedule(160, 192, 65 / 88, 76 / 88, 32)

    def ffcv(epoch, start=65, end=76):  # epoch counted from 0
        if epoch <= start:
            return 160
        if epoch >= end:
            return 192
        return int(np.round(np.interp([epoch], [start, end], [160, 192])[0] / 32)) * 32

    assert [s.at(e, 88) for e in range(1, 89)] == [ffcv(e - 1) for e in range(1, 89)]


@pytest.mark.parametrize("method", ["matmul", "per_image"])
def test_flip_and_normalise_inside_the_crop_resize_equal_doing_them_after(method):
    x = smooth_images(10, 30, 40)
    rows, cols = aug.plans(torch.full((10,), 30), torch.full((10,), 40),
                           aug.Augment(resized_crop=aug.ResizedCrop(16, (0.08, 1.0), (3 / 4, 4 / 3))), 16,
                           torch.Generator().manual_seed(4))
    t = torch.tensor([0, 1] * 5)  # half of them "stored transposed": the planes are square here
    flip = aug.flip_mask(10, torch.Generator().manual_seed(5))
    scale, shift = torch.tensor([1 / 60, 1 / 50, 1 / 40]).view(1, 3, 1, 1), torch.tensor([-2.0, -1.5, -1.0]).view(1, 3, 1, 1)
    fused = aug.crop_resize(x, torch.arange(10), rows, cols, 16, t, method, flip=flip, normalise=(scale, shift))
    plain = aug.crop_resize(x, torch.arange(10), rows, cols, 16, t, method)
    plain[flip] = plain[flip].flip(3)
    assert bool(flip.any()) and not bool(flip.all())
    assert torch.equal(fused, plain.float().mul_(scale).add_(shift))


def test_store_problems_refuse_what_cannot_cut_batches_and_note_the_scale_jitter_approximation():
    meta = {"resize": {"train": {"policy": "shorter_side_aspect_capped", "size": 256, "slot": [256, 341]}}}
    crop_pad = aug.store_problems(meta, {"crop_pad": 4, "flip": True}, where="dataset x")
    assert len(crop_pad[0]) == 2 and "needs augment.resized_crop or augment.scale_jitter" in crop_pad[0][0]
    assert "crop_pad needs train images of one size" in crop_pad[0][1]
    assert aug.store_problems(meta, {"resized_crop": {"size": 224, "scale": [0.08, 1], "ratio": [0.75, 1.33]}},
                              where="x") == ([], [])
    problems, notes = aug.store_problems(meta, {"scale_jitter": {"min_size": 256, "max_size": 480, "crop": 224}},
                                         where="dataset x")
    assert problems == [] and "an approximation" in notes[0] and "480" in notes[0]
    fixed = {"resize": None, "shapes": {"train": [3, 32, 32]}}  # CIFAR: one size, crop_pad fine
    assert aug.store_problems(fixed, {"crop_pad": 4}, where="x") == ([], [])


def test_recipe_augmentation_is_validated_and_false_switches_a_part_off():
    from resnet_bench import config as cfg

    fb = cfg.resolve_recipe({"name": "fb_resnet_imagenet", "augment": {"lighting": False,
                                                                         "resized_crop": {"size": 128}}})
    assert fb.augment.lighting is None and fb.augment.resized_crop.size == 128
    assert fb.augment.resized_crop.scale == [0.08, 1.0] and fb.augment.color_jitter.brightness == 0.4
    for bad, needle in (({"crop_pad": 4}, "both crop"), ({"scale_jitter": {"min_size": 300, "max_size": 256}},
                                                          "min_size <= max_size"),
                        ({"resized_crop": False, "resolution_schedule": {}}, "needs resized_crop"),
                        ({"resized_crop": {"size": 64, "scale": [0.5, 0.2]}}, "low <= high")):
        with pytest.raises(cfg.ConfigError, match=needle):
            cfg.resolve_recipe({"name": "fb_resnet_imagenet", "augment": bad})
