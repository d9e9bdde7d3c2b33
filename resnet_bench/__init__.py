"""resnet-bench: ResNet v1 (He et al. 2015) vs v2 (He et al. 2016) across depth and dataset."""

__version__ = "0.1.0"
