"""Worker of test_dist.py, run by torchrun (not collected by pytest).

Usage: python -m torch.distributed.run --nproc_per_node=2 \
    _dist_channel_worker.py DATA_ROOT WORK_DIR

Trains the tiny config for 2 iterations with channel pruning (SNIP scores on
every rank's own batches) under ``launcher='pytorch'`` on gloo. Each rank
perturbs its averaged scores by a rank-dependent amount before selection,
standing in for ranks whose scores differ (ties, non-deterministic
reductions): only the broadcast of rank 0's choice keeps the architectures
identical. Saves, per rank, the selection the rank made itself, the slim
spec, the layers' channel counts and the trained parameters to
``WORK_DIR/rank{r}.pt``.
"""
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from conftest import make_tiny_cfg  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import epsd_mm.pruning.pruner as channel_pruning  # noqa: E402
from epsd_mm.pruning import get_slim_spec, layer_channels  # noqa: E402
from epsd_mm.utils import (close_distributed,  # noqa: E402
                           setup_cpu_distributed)

local_keep = {}


def perturbed_select(scores, *args, **kwargs):
    """select_channels on scores shifted by a rank-dependent noise."""
    gen = torch.Generator().manual_seed(100 + torch.distributed.get_rank())
    noisy = {
        name: s + torch.rand(s.shape, generator=gen) * s.abs().max()
        for name, s in scores.items()
    }
    keep = select(noisy, *args, **kwargs)
    local_keep.update({name: k.clone() for name, k in keep.items()})
    return keep


select = channel_pruning.select_channels
channel_pruning.select_channels = perturbed_select


def main() -> None:
    data_root, work_dir = sys.argv[1:3]
    torch.set_num_threads(1)
    cfg = make_tiny_cfg(
        data_root,
        work_dir, {
            'default_hooks.pruning.granularity': 'channel',
            'default_hooks.pruning.sparsity': 0.5,
            'default_hooks.pruning.criterion': 'snip',
            'default_hooks.pruning.loss': 'task',
            'default_hooks.pruning.min_density': 0.1,
        },
        max_iters=2)
    cfg.launcher = 'pytorch'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    assert setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.module  # DDP-wrapped
    result = dict(
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
    torch.save(result, osp.join(work_dir, f'rank{runner.rank}.pt'))
    close_distributed()


if __name__ == '__main__':
    main()
