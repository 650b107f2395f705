"""Per-layer sparsity of a pruned checkpoint: a table and a density bar plot.

The plot shows every layer's kept fraction (value printed on its bar) and,
when the checkpoint records how it was pruned, the target density.

Example:
    python tools/analysis/sparsity_report.py work_dirs/epsd/iter_20000.pth \
        --out work_dirs/epsd/density.png
"""
import argparse
import os.path as osp
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from mmengine.runner import CheckpointLoader  # noqa: E402
from torch import Tensor  # noqa: E402

from epsd_mm.pruning import (LayerSparsity, PruningRecord,  # noqa: E402
                             check_masked_state_dict,
                             format_sparsity_table, masked_param_names,
                             rename_legacy_mask_keys, sparsity_stats)
from epsd_mm.utils.checkpoint import load_checkpoint_file  # noqa: E402


def load_pruned(path: str) -> Tuple[Dict[str, Tensor], Optional[float]]:
    """The masked weights of a checkpoint and its target sparsity, if the
    checkpoint records one."""
    checkpoint = load_checkpoint_file(
        path,
        lambda file: CheckpointLoader.load_checkpoint(
            file, map_location='cpu'))
    state = checkpoint.get('state_dict', checkpoint)
    rename_legacy_mask_keys(state)
    check_masked_state_dict(state, path)
    weights = {name: state[name] for name in masked_param_names(state)}
    if not weights:
        raise ValueError(
            f'{path} holds no pruning masks: it was not pruned by epsd_mm '
            '(train with EarlyPruningHook or GradualPruningHook in '
            'default_hooks).')
    stages = PruningRecord.from_checkpoint(checkpoint).stages
    targets = [s['config']['sparsity'] for s in stages.values()
               if 'sparsity' in s.get('config', {})]
    return weights, (max(targets) if targets else None)


def plot_density(stats: List[LayerSparsity], out: str,
                 target: Optional[float]) -> None:
    """Horizontal bars of every layer's kept fraction, values on the bars,
    and the target density as a line."""
    fig, ax = plt.subplots(figsize=(8, max(3, 0.24 * len(stats))))
    names = [s.name.rsplit('.weight', 1)[0] for s in stats]
    densities = [s.density for s in stats]
    bars = ax.barh(range(len(stats)), densities, color='tab:blue')
    ax.bar_label(bars, labels=[f'{d:.3f}' for d in densities], fontsize=6,
                 padding=2)
    if target is not None:
        ax.axvline(1 - target, color='tab:red', linestyle='--',
                   label=f'target density {1 - target:.3f} '
                   f'(sparsity {target:.3f})')
        ax.legend(loc='lower right', fontsize=7)
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
    weights, target = load_pruned(args.checkpoint)
    # A weight's zeros are its pruned entries (plus any exact zeros).
    stats = sparsity_stats({name: w != 0 for name, w in weights.items()})
    print(format_sparsity_table(stats))
    if target is not None:
        print(f'target sparsity: {target:.4f}')
    out = args.out or osp.splitext(args.checkpoint)[0] + '_density.png'
    plot_density(stats, out, target)
    print(f'density plot written to {out}')


if __name__ == '__main__':
    main()
