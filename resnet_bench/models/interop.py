"""State dicts of the reference libraries mapped onto ours (timm resnetv2 -> `_v2` models;
torchvision `resnet*` state dicts load into `_v1` models as they are)."""

from __future__ import annotations

import re

from torch import Tensor

# subclasses BatchNorm2d, so the tensors are the same.
_TIMM_V2_KEYS = (
    (r"stem\.conv\.weight", r"conv1.weight"),
    (r"(layer\d+\.\d+)\.norm(\d)\.(\w+)", r"\1.bn\2.\3"),
    (r"(layer\d+\.\d+)\.conv(\d)\.weight", r"\1.conv\2.weight"),
    (r"(layer\d+\.\d+)\.downsample\.conv\.weight", r"\1.downsample.weight"),
    (r"norm\.(\w+)", r"bn_final.\1"),
    (r"head\.fc\.(weight|bias)", r"fc.\1"),
)


def convert_timm_resnetv2(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a timm `resnetv2_{18,34,50,101,152}` state_dict onto the matching `_v2` model.

    timm's classifier is a 1x1 conv on the pooled features (C_out x C_in x 1 x 1); ours
    is a Linear (C_out x C_in). Other resnetv2 variants (deep stem 'd', BiT with StdConv
    and GroupNorm) have keys or layers we do not have: ValueError.
    """
    out = {}
    for key, value in state_dict.items():
        # timm counts stages from 0, torchvision's layer names from 1.
        renamed = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
        for pattern, template in _TIMM_V2_KEYS:
            match = re.fullmatch(pattern, renamed)
            if match:
                new_key = match.expand(template)
                break
        else:
            raise ValueError(f"unexpected key {key!r}: not a timm resnetv2_{{18,34,50,101,152}} state_dict")
        out[new_key] = value.flatten(1) if new_key == "fc.weight" else value
    return out
