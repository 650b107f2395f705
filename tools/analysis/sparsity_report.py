"""Per-layer sparsity of a pruned checkpoint: a table and a density bar plot.

Example:
    python tools/analysis/sparsity_report.py work_dirs/epsd/iter_20000.pth \
        --out work_dirs/epsd/density.png
"""
import argparse
import os.path as osp
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from mmengine.runner import CheckpointLoader  # noqa: E402
from torch import Tensor  # noqa: E402

import epsd_mm  # noqa: F401,E402  allow-lists MMEngine checkpoint globals
from epsd_mm.pruning import (MASK_SUFFIX, LayerSparsity,  # noqa: E402
                             format_sparsity_table, sparsity_stats)


def checkpoint_weights(path: str) -> Dict[str, Tensor]:
    """The masked weights of a checkpoint, with pruned entries zeroed."""
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    weights = {
        key[:-len(MASK_SUFFIX)]: state[key[:-len(MASK_SUFFIX)]]
        for key in state if key.endswith(MASK_SUFFIX)
    }
    if not weights:
        raise ValueError(
            f'{path} holds no "*{MASK_SUFFIX}" buffers: it was not pruned by '
            'epsd_mm (train with EarlyPruningHook in default_hooks).')
    return weights


def plot_density(stats: List[LayerSparsity], out: str) -> None:
    """Horizontal bar plot of the kept fraction of every layer."""
    fig, ax = plt.subplots(figsize=(8, max(3, 0.22 * len(stats))))
    names = [s.name.rsplit('.weight', 1)[0] for s in stats]
    ax.barh(range(len(stats)), [s.density for s in stats], color='tab:blue')
    ax.set_yticks(range(len(stats)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel('density (kept fraction)')
    ax.set_title('per-layer density')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')
    parser.add_argument(
        '--out', help='PNG path (default: next to the checkpoint)')
    args = parser.parse_args()
    weights = checkpoint_weights(args.checkpoint)
    # A weight's zeros are its pruned entries (plus any exact zeros).
    stats = sparsity_stats({name: w != 0 for name, w in weights.items()})
    print(format_sparsity_table(stats))
    out = args.out or osp.splitext(args.checkpoint)[0] + '_density.png'
    plot_density(stats, out)
    print(f'density plot written to {out}')


if __name__ == '__main__':
    main()
