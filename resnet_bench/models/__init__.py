"""The ResNet v1 / v2 model zoo: one trunk, four blocks, five residual units.

Sources cited in comments:

- [v1] He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition"
  (arXiv:1512.03385).
- [v2] He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks"
  (arXiv:1603.05027), with its reference code KaimingHe/resnet-1k-layers
  (`resnet-pre-act.lua`).
- torchvision `models/resnet.py` (v1 module names, init, "V1.5" stride placement) and
  timm `models/resnetv2.py` (pre-activation blocks, shared block signature).
- The authors' Torch code: facebookarchive/fb.resnet.torch `models/resnet.lua` (v1,
  CIFAR option A) and `models/preresnet.lua` (v2), KaimingHe/resnet-1k-layers
  `resnet-pre-act.lua` (v2 ResNet-164/1001); translated in tests/reference_lua.py.

Two variants of every model (`build_model(..., variant=...)`):

- "modern" (default): with `variant="modern"` every `_v1` model loads a torchvision
  `resnetX` state_dict as is and every `_v2` model a timm `resnetv2_X` state_dict
  through `convert_timm_resnetv2` (projection shortcuts, stride on the bottleneck's 3x3).
- "paper": the network of the paper that defines the model, equal by logits to the
  authors' code (tests/test_paper_parity.py): see `resolve_arch`.

Tensor shapes in comments are N x C x H x W.
"""

from resnet_bench.models.blocks import (PREACT_UNITS, BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck,
                                        ZeroPadShortcut)
from resnet_bench.models.interop import convert_timm_resnetv2
from resnet_bench.models.registry import (CIFAR_LAYERS, DEFAULT_WIDTH, IMAGENET_LAYERS, ModelName, available_models,
                                          build_model, count_params, model_flops, parse_model_name, resolve_arch)
from resnet_bench.models.trunk import ResNet
from resnet_bench.vocab import BOTTLENECK_STRIDES, SHORTCUTS, STEMS, UNITS, VARIANTS, VERSION_UNITS

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ZeroPadShortcut",
    "ResNet",
    "ModelName",
    "UNITS",
    "PREACT_UNITS",
    "VERSION_UNITS",
    "STEMS",
    "VARIANTS",
    "SHORTCUTS",
    "BOTTLENECK_STRIDES",
    "IMAGENET_LAYERS",
    "CIFAR_LAYERS",
    "DEFAULT_WIDTH",
    "available_models",
    "build_model",
    "resolve_arch",
    "parse_model_name",
    "count_params",
    "model_flops",
    "convert_timm_resnetv2",
]
