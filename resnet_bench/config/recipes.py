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
        "augment": {"crop_pad": 4, "flip": True},
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
        "augment": {"crop_pad": 4, "flip": True},
    },
    # Short cosine schedule for quick experiments (smoke tests, digits).
    "quick": {
        "epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine", "milestones": [],
        "gamma": 0.1, "warmup_iters": 0, "warmup_lr": 0.0, "label_smoothing": 0.0,
        "augment": {"crop_pad": 0, "flip": False},
    },
}
DEFAULT_RECIPE = "quick"
