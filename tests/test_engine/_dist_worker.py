"""Worker of test_dist.py, run by torchrun (not collected by pytest).

Usage: python -m torch.distributed.run --nproc_per_node=2 \
    _dist_worker.py DATA_ROOT WORK_DIR

Two runs of the tiny config in one process group (``launcher='pytorch'``,
gloo), 2 iterations each, one torchrun launch for both:

- ``WORK_DIR/weight``: EPSD weight pruning, ProsPr scoring on every rank's
  own batches. Saves per rank the masks, the zero pattern and values of the
  masked weights and the sample indices the rank's sampler draws.
- ``WORK_DIR/channel``: channel pruning with SNIP. Each rank perturbs its
  averaged scores by a rank-dependent amount before selection, standing in
  for ranks whose scores differ (ties, non-deterministic reductions): only
  the broadcast of rank 0's choice keeps the architectures identical. Saves
  per rank the selection the rank made itself, the slim spec, the layers'
  channel counts and the trained parameters.

Each run's records go to ``<its work_dir>/rank{r}.pt``.
"""
import itertools
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from conftest import make_tiny_cfg  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import epsd_mm.pruning.pruner as pruner  # noqa: E402
from epsd_mm.pruning import get_masks, get_slim_spec  # noqa: E402
from epsd_mm.pruning import layer_channels  # noqa: E402
from epsd_mm.utils import (close_distributed,  # noqa: E402
                           setup_cpu_distributed)

local_keep = {}
select_channels = pruner.select_channels


def perturbed_select(scores, *args, **kwargs):
    """select_channels on scores shifted by a rank-dependent noise."""
    gen = torch.Generator().manual_seed(100 + torch.distributed.get_rank())
    noisy = {
        name: s + torch.rand(s.shape, generator=gen) * s.abs().max()
        for name, s in scores.items()
    }
    keep = select_channels(noisy, *args, **kwargs)
    local_keep.update({name: k.clone() for name, k in keep.items()})
    return keep


pruner.select_channels = perturbed_select


def train(data_root: str, work_dir: str, overrides=None) -> Runner:
    cfg = make_tiny_cfg(data_root, work_dir, overrides, max_iters=2)
    cfg.launcher = 'pytorch'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    # what tools/train.py does: MMEngine alone would call torch.cuda
    assert setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def weight_record(runner: Runner) -> dict:
    model = runner.model.module  # DDP-wrapped
    params = dict(model.named_parameters())
    masks = {name: mask.clone() for name, mask in get_masks(model).items()}
    sampler = runner.train_dataloader.sampler
    return dict(
        world_size=runner.world_size,
        wrapper=type(runner.model).__name__,
        masks=masks,
        zeros={name: params[name].detach() == 0
               for name in masks},
        weights={name: params[name].detach().clone()
                 for name in masks},
        indices=list(itertools.islice(iter(sampler), 8)),
    )


def channel_record(runner: Runner) -> dict:
    model = runner.model.module
    return dict(
        world_size=runner.world_size,
        wrapper=type(runner.model).__name__,
        wrapped_is_model=runner.model.module is model,
        local_keep=local_keep,
        spec=get_slim_spec(model),
        channels=layer_channels(model),
        # parameters: BN running stats are per rank (broadcast_buffers=False)
        weights={k: v.detach().clone()
                 for k, v in model.named_parameters()},
    )


def main() -> None:
    data_root, work_dir = sys.argv[1:3]
    torch.set_num_threads(1)
    runs = {
        'weight': (None, weight_record),
        'channel': ({
            'default_hooks.pruning.granularity': 'channel',
            'default_hooks.pruning.sparsity': 0.5,
            'default_hooks.pruning.criterion': 'snip',
            'default_hooks.pruning.loss': 'task',
            'default_hooks.pruning.min_density': 0.1,
        }, channel_record),
    }
    for name, (overrides, record) in runs.items():
        run_dir = osp.join(work_dir, name)
        os.makedirs(run_dir, exist_ok=True)
        runner = train(data_root, run_dir, overrides)
        torch.save(record(runner), osp.join(run_dir, f'rank{runner.rank}.pt'))
    close_distributed()


if __name__ == '__main__':
    main()
