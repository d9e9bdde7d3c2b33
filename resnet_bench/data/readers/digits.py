"""scikit-learn's digits (UCI optdigits, 1,797 8 x 8 grey images, 10 classes): no file, no official test
split (a seeded stratified 20% is held out)."""

from __future__ import annotations

import numpy as np

from resnet_bench.data.artifact import stratified_indices

DIGITS_TEST_FRACTION = 0.2  # scikit-learn's digits ship no test split: a seeded stratified 20%


def read_digits(split_seed: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap, UCI "optdigits"); scaled to 0..255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # N x 1 x 8 x 8
    labels = bunch.target.astype(np.int64)
    test_idx = stratified_indices(labels, DIGITS_TEST_FRACTION, split_seed + 1_000_003)
    train_mask = np.ones(len(labels), bool)
    train_mask[test_idx] = False
    classes = [str(c) for c in bunch.target_names]
    return images[train_mask], labels[train_mask], images[test_idx], labels[test_idx], classes
