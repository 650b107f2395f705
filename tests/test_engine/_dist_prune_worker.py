"""Worker of test_dist.py, run by torchrun (not collected by pytest).

Usage: python -m torch.distributed.run --nproc_per_node=2 \
    _dist_prune_worker.py DATA_ROOT WORK_DIR

Trains the tiny EPSD config for 2 iterations with ``launcher='pytorch'`` on
gloo (EarlyPruningHook scores on every rank with ProsPr) and saves, per rank,
the masks, the zero pattern and values of the masked weights and the sample
indices the rank's sampler draws to ``WORK_DIR/rank{r}.pt``.
"""
import itertools
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from conftest import make_tiny_cfg  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from epsd_mm.pruning import get_masks  # noqa: E402
from epsd_mm.utils import (close_distributed,  # noqa: E402
                           setup_cpu_distributed)


def main() -> None:
    data_root, work_dir = sys.argv[1:3]
    torch.set_num_threads(1)
    cfg = make_tiny_cfg(data_root, work_dir, max_iters=2)
    cfg.launcher = 'pytorch'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    # what tools/train.py does: MMEngine alone would call torch.cuda
    assert setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.module  # DDP-wrapped
    params = dict(model.named_parameters())
    masks = {name: mask.clone() for name, mask in get_masks(model).items()}
    sampler = runner.train_dataloader.sampler
    result = dict(
        world_size=runner.world_size,
        wrapper=type(runner.model).__name__,
        masks=masks,
        zeros={name: params[name].detach() == 0
               for name in masks},
        weights={name: params[name].detach().clone()
                 for name in masks},
        indices=list(itertools.islice(iter(sampler), 8)),
    )
    torch.save(result, osp.join(work_dir, f'rank{runner.rank}.pt'))
    close_distributed()


if __name__ == '__main__':
    main()
