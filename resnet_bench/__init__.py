"""resnet-bench: ResNet v1 (He et al. 2015) vs v2 (He et al. 2016) across depth and dataset."""

__version__ = "0.1.0"


def load_model(path, *, device: str = "cpu"):
    """A trained model from its file (`results/<experiment>/cells/<cell_id>.safetensors`), in eval mode.

    Three lines in a notebook::

        from resnet_bench import load_model
        m = load_model("results/smoke/cells/<cell_id>.safetensors")
        logits = m(x)  # x: N x C x H x W, normalised with m.model_file.dataset's mean and std

    The network is rebuilt from the file's own metadata and every tensor checked against it (nothing in
    the file is executed: safetensors, no pickle); `m.model_file` holds its cell, kind (final / best),
    epoch, metrics and dataset. Importing the package does not import torch: this function does.
    """
    # Looked up by name when called: no pipeline stage calls it, so the model-file reader (and torch)
    # is neither imported with the package nor a dependency of every stage (tests/test_dvc_deps.py).
    import importlib

    return importlib.import_module("resnet_bench.models.files").load_model(path, device=device)
