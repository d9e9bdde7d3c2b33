"""One process doing by hand what a 2-worker DistributedDataParallel cell should do, with no
torch.distributed: each global batch (the one-process loader's) split into its two rank shards
(images 0, 2, 4, ... and 1, 3, 5, ...), batch norm over each half alone, each half's mean-loss
gradient halved and the halves added (DDP's average), one SGD step; the running statistics are
rank 0's (DDP hands them to rank 1 before each forward). Writes the final state dict.

Run as `python ddp_emulation.py CELL_JSON PREPARED_DIR OUT_PT` in a process started with the
cell's pinned numeric environment (as the ranks are).
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_bench import config as cfg
from resnet_bench.data.artifact import load_prepared
from resnet_bench.data.loader import DeviceLoader
from resnet_bench.train import build_cell_model, lr_at, make_optimizer, pin_numeric_environment, seed_everything


def emulate(cell: cfg.Cell, prepared: Path) -> dict:
    world = cell.world_size
    recipe = cell.recipe
    assert world == 2 and not recipe.augment.crop_pad and not recipe.augment.flip, "emulates 2 ranks, no augmentation"
    pin_numeric_environment(cell, env=False)
    torch.set_num_threads(cell.runtime.threads)
    seed_everything(cell.seed)
    ds = load_prepared(prepared / cell.dataset)
    loader = DeviceLoader(torch.from_numpy(ds.train_x), torch.from_numpy(ds.train_y), batch_size=recipe.batch_size,
                          shuffle=True, seed=cell.seed, mean=ds.meta["mean"], std=ds.meta["std"])
    model = build_cell_model(cell, ds.meta["num_classes"], ds.meta["channels"])
    optimizer = make_optimizer(model, recipe)
    params = [p for p in model.parameters()]
    n = len(ds.train_y)
    last_small = 0 < n % recipe.batch_size < 2 * world  # a rank would get < 2 images: that batch is left out
    steps_per_epoch = len(loader) - last_small
    total, step = recipe.epochs * steps_per_epoch, 0
    model.train()
    for epoch in range(1, recipe.epochs + 1):
        loader.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i == steps_per_epoch:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, recipe)
            rank0_buffers = {k: b.clone() for k, b in model.named_buffers()}
            grads = []
            for r in range(world):
                if r:  # rank r starts from rank 0's buffers; rank 0's updated ones are the model's after
                    updated = {k: b.clone() for k, b in model.named_buffers()}
                    model.load_state_dict({**model.state_dict(), **rank0_buffers})
                loss = F.cross_entropy(model(x[r::world]).float(), y[r::world])
                grads.append(torch.autograd.grad(loss, params))
                if r:
                    model.load_state_dict({**model.state_dict(), **updated})
            for p, *g in zip(params, *grads):
                p.grad = sum(gr / world for gr in g)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
    return model.state_dict()


if __name__ == "__main__":
    cell_json, prepared, out = sys.argv[1:]
    cell = cfg.Cell.model_validate(json.loads(Path(cell_json).read_text()))
    torch.save(emulate(cell, Path(prepared)), out)
