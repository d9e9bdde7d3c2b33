"""Named training recipes: each a complete `Recipe` (resnet_bench.config.schema) as plain
values. An experiment picks one by name and may override any field."""

from __future__ import annotations

from typing import Any

# Named training recipes. An experiment picks one by name and may override any field.
RECIPES: dict[str, dict[str, Any]] = {
    # He et al. 2016, Sec. 4.1 (CIFAR): SGD momentum 0.9, weight decay 1e-4,
    # batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k iterations (50% and
    # 75%), lr 0.01 warm-up for ~400 iterations for the deepest nets, 4-pixel
    # zero padding + 32x32 random crop + horizontal flip.
    "he2016_cifar": {
        "epochs": 164, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
        "nesterov": False, "weight_decay": 1e-4, "schedule": "step", "milestones": [0.5, 0.75],
        "gamma": 0.1, "warmup_iters": 400, "warmup_lr": 0.01, "label_smoothing": 0.0,
        "lr_reference_batch": None, "bn_weight_decay": True, "augment": {"crop_pad": 4, "flip": True},
    },
    # He et al. 2015, Sec. 4.2 (CIFAR-10, Table 6): batch 128, lr 0.1 divided by 10 at
    # 32k and 48k iterations, stopped at 64k (45k/5k train/val split: 64k iterations of
    # 128 = 182 epochs of 45k), weight decay 1e-4, momentum 0.9, 4-pixel pad + crop + flip.
    # ResNet-110 warms up at 0.01 "until the training error is below 80% (about 400
    # iterations)"; a fixed 400 iterations here (applied to every depth: harmless for
    # shallower nets, which the paper trained without it).
    "he2015_cifar": {
        "epochs": 182, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
        "nesterov": False, "weight_decay": 1e-4, "schedule": "step", "milestones": [0.5, 0.75],
        "gamma": 0.1, "warmup_iters": 400, "warmup_lr": 0.01, "label_smoothing": 0.0,
        "lr_reference_batch": None, "bn_weight_decay": True, "augment": {"crop_pad": 4, "flip": True},
    },
    # fb.resnet.torch's ImageNet recipe (facebookarchive/fb.resnet.torch: opts.lua, train.lua,
    # datasets/imagenet.lua, datasets/transforms.lua), used by He et al. 2016 for ResNet-200 (its
    # preresnet.lua): 90 epochs, batch 256, lr 0.1 (scaled by batch/256 for other batch sizes: Goyal et
    # al. 2017's linear rule), divided by 10 every 30 epochs, SGD momentum 0.9 with Nesterov, weight decay
    # 1e-4 on every parameter (BN included; bn_weight_decay false is the common variant without),
    # Inception-style random-sized crop to 224 + ColorJitter(0.4, 0.4, 0.4) + PCA lighting 0.1 +
    # flip; evaluation on Scale(256) + CenterCrop(224), which the prepared store holds (eval_resize
    # 256, eval_crop 224). Differences, all in fb's transforms.lua: its crop draws the aspect
    # uniformly and swaps w/h half the time where torchvision's is log-uniform, fb resizes bicubic
    # where this is bilinear (antialiased), and fb's colour jitter does not clamp to [0, 1].
    "fb_resnet_imagenet": {
        "epochs": 90, "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "lr_reference_batch": 256,
        "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "bn_weight_decay": True, "schedule": "step",
        "milestones": [1 / 3, 2 / 3], "gamma": 0.1, "warmup_iters": 0, "warmup_lr": 0.0, "label_smoothing": 0.0,
        "augment": {"flip": True, "resized_crop": {"size": 224, "scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]},
                    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
                    "lighting": {"alphastd": 0.1}},
    },
    # He et al. 2015 Sec. 3.4 (ImageNet): shorter side resized uniformly in [256, 480], a random 224
    # crop of the image or its flip, standard colour augmentation (Krizhevsky et al. 2012: the PCA
    # lighting), SGD batch 256, lr 0.1 divided by 10 "when the error plateaus", 60 x 10^4 iterations
    # (= 120 epochs of 1.28M images), weight decay 1e-4, momentum 0.9, no dropout. The plateaus are not
    # given: steps at 30, 60 and 90 of the 120 epochs here. Evaluation: the paper's 10-crop and
    # multi-scale testing are not reproduced; single centre crop of the prepared eval store.
    "he2015_imagenet": {
        "epochs": 120, "batch_size": 256, "optimizer": "sgd", "lr": 0.1, "lr_reference_batch": 256,
        "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "bn_weight_decay": True, "schedule": "step",
        "milestones": [0.25, 0.5, 0.75], "gamma": 0.1, "warmup_iters": 0, "warmup_lr": 0.0,
        "label_smoothing": 0.0,
        "augment": {"flip": True, "scale_jitter": {"min_size": 256, "max_size": 480, "crop": 224},
                    "lighting": {"alphastd": 0.1}},
    },
    # Chrabaszcz, Loshchilov, Hutter 2017 (downsampled ImageNet), their WRNs_imagenet.py: 40 epochs,
    # batch 128, SGD momentum 0.9 (not Nesterov), lr 0.01 divided by 5 at epochs 10, 20, 30, an L2
    # penalty 5e-4 * sum(w^2) on conv and dense weights only (= weight decay 1e-3 on the weights, none
    # on BN), 4-pixel zero-pad crop and flip (they train on every image and its mirror; a random flip here).
    "chrabaszcz2017_imagenet": {
        "epochs": 40, "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "lr_reference_batch": None,
        "momentum": 0.9, "nesterov": False, "weight_decay": 1e-3, "bn_weight_decay": False, "schedule": "step",
        "milestones": [0.25, 0.5, 0.75], "gamma": 0.2, "warmup_iters": 0, "warmup_lr": 0.0,
        "label_smoothing": 0.0, "augment": {"crop_pad": 4, "flip": True},
    },
    # Short cosine schedule for quick experiments (smoke tests, digits).
    "quick": {
        "epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine", "milestones": [],
        "gamma": 0.1, "warmup_iters": 0, "warmup_lr": 0.0, "label_smoothing": 0.0,
        "lr_reference_batch": None, "bn_weight_decay": True, "augment": {"crop_pad": 0, "flip": False},
    },
}
DEFAULT_RECIPE = "quick"
