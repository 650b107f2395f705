"""How the pruning of two or more checkpoints differs: per-layer density,
overlap of the kept sets, collapsed layers, effective params and FLOPs.

What is compared depends on how the checkpoints were pruned:

* **weights** (masks, ``*_epsd_mask`` in the state dict): one row per
  masked weight; the kept set of a layer is its mask's True entries;
* **channels** (a slim spec in the :class:`~epsd_mm.pruning.PruningRecord`):
  one row per channel group (named by its root layer); the kept set is the
  group's kept channel indices, which the slim spec records under
  ``groups`` (see :mod:`epsd_mm.pruning.slimming`).

The overlap of two kept sets ``A`` and ``B`` is their IoU, ``|A & B| /
|A | B|`` (1.0 when both are empty: the sets are equal); the overall IoU
sums intersections and unions over all layers. Per layer, every checkpoint
is compared with the first (the reference); overall, every pair is.

Typical use (what ``tools/analysis/compare_masks.py`` does)::

    pruned = [load_pruned_checkpoint(p) for p in ('a.pth', 'b.pth')]
    comparison = compare_masks(pruned)
    print(format_comparison(comparison))
    plot_densities(comparison, 'density.png')
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from torch import Tensor

from epsd_mm.deploy.checkpoint import (build_masked_model, build_model,
                                       load_checkpoint_dict)
from epsd_mm.deploy.complexity import (PartComplexity, model_complexity,
                                       render_table, zero_weight_masks)
from epsd_mm.deploy.config import input_shape_from_cfg
from epsd_mm.pruning import (MASK_SUFFIX, LayerSparsity, PruningRecord,
                             get_masks, masked_param_names, sparsity_stats)

#: How the kinds of pruning are named in tables and errors.
KINDS = {'weight': 'weight masks', 'channel': 'removed channels (slim spec)'}


@dataclass
class PrunedCheckpoint:
    """The kept sets of one pruned checkpoint.

    Attributes:
        path (str): The file.
        label (str): Its name in tables and plots.
        kind (str): ``'weight'`` (masks) or ``'channel'`` (slim spec).
        keep (dict[str, Tensor]): Per layer (masked weight, or channel group
            by its root layer), a bool tensor, True where kept.
        checkpoint (dict): The loaded checkpoint.
    """
    path: str
    label: str
    kind: str
    keep: Dict[str, Tensor]
    checkpoint: dict = field(repr=False)

    @property
    def record(self) -> PruningRecord:
        """PruningRecord: What the checkpoint records about its pruning."""
        return PruningRecord.from_checkpoint(self.checkpoint)


def channel_keep(spec: dict, source: str) -> Dict[str, Tensor]:
    """Keep-masks of the channel groups of a slim spec.

    Args:
        spec (dict): A slim spec with ``groups`` (see
            :mod:`epsd_mm.pruning.slimming`).
        source (str): The checkpoint, for errors.

    Returns:
        dict[str, Tensor]: Group name to a bool vector over its dense
        channels, True where kept.
    """
    if 'groups' not in spec:
        raise ValueError(
            f'{source} is channel-pruned, but its slim spec records only '
            'channel counts, not which channels were kept (it was written '
            'by an epsd_mm before the spec had "groups"), so its kept sets '
            'cannot be compared. Prune again with this version, or compare '
            'counts with tools/analysis/get_flops.py.')
    keep = {}
    for name, group in spec['groups'].items():
        mask = torch.zeros(group['channels'], dtype=torch.bool)
        mask[torch.as_tensor(group['kept'], dtype=torch.long)] = True
        keep[name] = mask
    return keep


def load_pruned_checkpoint(path: str,
                           label: Optional[str] = None) -> PrunedCheckpoint:
    """Read the kept sets of a checkpoint written by epsd_mm's hooks.

    A checkpoint with a slim spec is compared on its channels, else on its
    weight masks.

    Args:
        path (str): A ``.pth`` checkpoint of ``tools/train.py``.
        label (str, optional): Its name in tables. Defaults to the path.

    Returns:
        PrunedCheckpoint: Its kept sets.

    Raises:
        ValueError: The file holds neither masks nor a slim spec, or a slim
            spec without kept channel indices.
    """
    checkpoint = load_checkpoint_dict(path)
    state = checkpoint['state_dict']
    spec = PruningRecord.from_checkpoint(checkpoint).slim_spec
    if spec is not None:
        kind, keep = 'channel', channel_keep(spec, path)
    else:
        kind = 'weight'
        keep = {
            name: state[name + MASK_SUFFIX].bool()
            for name in masked_param_names(state)
        }
        if not keep:
            raise ValueError(
                f'{path} holds no pruning masks nor a slim spec: it was not '
                'pruned by epsd_mm (train with EarlyPruningHook or '
                'GradualPruningHook in default_hooks, and pass the '
                'checkpoint tools/train.py saved, not an exported one).')
    return PrunedCheckpoint(path, label or path, kind, keep, checkpoint)


def intersection_union(a: Tensor, b: Tensor) -> Tuple[int, int]:
    """Sizes of the intersection and the union of two kept sets.

    Args:
        a (Tensor): Bool keep-mask.
        b (Tensor): Bool keep-mask of the same shape.

    Returns:
        tuple[int, int]: ``|a & b|`` and ``|a | b|``.
    """
    return int((a & b).sum()), int((a | b).sum())


def iou(intersection: int, union: int) -> float:
    """IoU of two kept sets from their intersection and union sizes (1.0
    for two empty sets: they are equal)."""
    return intersection / union if union else 1.0


@dataclass
class MaskComparison:
    """The result of :func:`compare_masks`.

    Attributes:
        labels (list[str]): The checkpoints, in the order given.
        kind (str): ``'weight'`` or ``'channel'``.
        stats (list[list[LayerSparsity]]): Per checkpoint, per layer (same
            layer order for all), its size, zeros (pruned) and density.
        layer_iou (dict[int, list[float]]): Per checkpoint ``i >= 1``, the
            IoU of each layer's kept set with the first checkpoint's.
        overall_iou (dict[tuple[int, int], float]): Per pair ``(i, j)``,
            ``i < j``, the IoU over all layers.
        complexity (list[PartComplexity], optional): Per checkpoint, its
            dense and effective params and FLOPs
            (:func:`checkpoint_complexity`); None when no config was
            given.
    """
    labels: List[str]
    kind: str
    stats: List[List[LayerSparsity]]
    layer_iou: Dict[int, List[float]]
    overall_iou: Dict[Tuple[int, int], float]
    complexity: Optional[List[PartComplexity]] = None

    @property
    def layers(self) -> List[str]:
        """list[str]: The layer names."""
        return [s.name for s in self.stats[0]]

    @property
    def collapsed(self) -> List[List[str]]:
        """list[list[str]]: Per checkpoint, its layers with density 0."""
        return [[s.name for s in stats if s.zeros == s.numel]
                for stats in self.stats]


def check_comparable(checkpoints: Sequence[PrunedCheckpoint]) -> None:
    """Raise unless the checkpoints prune the same layers, the same way.

    Args:
        checkpoints (Sequence[PrunedCheckpoint]): At least two.

    Raises:
        ValueError: Fewer than two checkpoints; weight masks mixed with
            removed channels; or layer sets / shapes that differ (the first
            mismatching layer is named).
    """
    if len(checkpoints) < 2:
        raise ValueError('compare at least two checkpoints')
    first = checkpoints[0]
    for other in checkpoints[1:]:
        if other.kind != first.kind:
            raise ValueError(
                f'{first.path} is pruned by {KINDS[first.kind]}, '
                f'{other.path} by {KINDS[other.kind]}: their kept sets are '
                'not comparable. Compare checkpoints pruned at one '
                'granularity (see default_hooks.pruning.granularity).')
        names = list(dict.fromkeys([*first.keep, *other.keep]))
        for name in names:
            a, b = first.keep.get(name), other.keep.get(name)
            if a is None or b is None:
                has, lacks = ((first, other) if b is None else (other, first))
                raise ValueError(
                    f'{first.path} and {other.path} prune different layers: '
                    f'the first mismatch is {name!r}, pruned in {has.path} '
                    f'but not in {lacks.path}. Compare checkpoints of one '
                    'model config pruned with the same scopes.')
            if a.shape != b.shape:
                raise ValueError(
                    f'{first.path} and {other.path} come from different '
                    f'architectures: the first mismatch is {name!r}, of '
                    f'shape {tuple(a.shape)} vs {tuple(b.shape)}. Compare '
                    'checkpoints of one model config.')


def compare_masks(checkpoints: Sequence[PrunedCheckpoint],
                  cfg: Optional[Config] = None,
                  shape: Optional[Tuple[int, int]] = None) -> MaskComparison:
    """Compare the kept sets of pruned checkpoints.

    Args:
        checkpoints (Sequence[PrunedCheckpoint]): Two or more, of one model
            and one kind of pruning; the first is the reference of the
            per-layer IoU.
        cfg (Config, optional): The training config, to count effective
            params and FLOPs (pruned weights do no work; a slim network is
            counted on its slim architecture). Defaults to None (not
            counted).
        shape (tuple[int, int], optional): Input ``(H, W)`` of the FLOP
            count. Defaults to None (the config's crop size or fixed test
            Resize).

    Returns:
        MaskComparison: Densities, IoUs and, with ``cfg``, complexity.
    """
    check_comparable(checkpoints)
    names = list(checkpoints[0].keep)
    stats = [
        sparsity_stats({name: c.keep[name]
                        for name in names}) for c in checkpoints
    ]
    layer_iou = {}
    overall = {}
    for i, j in combinations(range(len(checkpoints)), 2):
        a, b = checkpoints[i].keep, checkpoints[j].keep
        counts = [intersection_union(a[name], b[name]) for name in names]
        if i == 0:
            layer_iou[j] = [iou(*c) for c in counts]
        overall[(i, j)] = iou(sum(c[0] for c in counts),
                              sum(c[1] for c in counts))
    complexity = None
    if cfg is not None:
        complexity = [
            checkpoint_complexity(cfg, c, shape) for c in checkpoints
        ]
    return MaskComparison(_unique([c.label for c in checkpoints]),
                          checkpoints[0].kind, stats, layer_iou, overall,
                          complexity)


def _unique(labels: List[str]) -> List[str]:
    """Labels with repeats numbered (``a``, ``a (2)``), for table
    columns."""
    seen: Dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        count = seen[label]
        unique.append(label if count == 1 else f'{label} ({count})')
    return unique


def checkpoint_complexity(
        cfg: Config,
        pruned: PrunedCheckpoint,
        shape: Optional[Tuple[int, int]] = None) -> PartComplexity:
    """Effective params and FLOPs of a pruned checkpoint's model, counted
    as ``tools/analysis/get_flops.py`` counts them.

    Args:
        cfg (Config): The config the checkpoint was trained with.
        pruned (PrunedCheckpoint): The checkpoint.
        shape (tuple[int, int], optional): Input ``(H, W)``. Defaults to
            None (the config's).

    Returns:
        PartComplexity: The ``'total'`` row: params and FLOPs of the dense
        network, effective ones of the pruned (for a slim checkpoint: of
        its slim architecture, less any masked weights).
    """
    inputs = torch.zeros(1, 3, *(shape or input_shape_from_cfg(cfg)))
    spec = pruned.record.slim_spec
    model = build_masked_model(cfg, pruned.checkpoint['state_dict'],
                               pruned.path, spec)
    masks = get_masks(model) or zero_weight_masks(model)
    total = model_complexity(model, inputs, masks)[-1]
    if spec is None:
        return total
    dense = model_complexity(build_model(cfg), inputs, {})[-1]
    return total._replace(params=dense.params, flops=dense.flops)


def format_comparison(comparison: MaskComparison) -> str:
    """Render a comparison as plain-text tables.

    Args:
        comparison (MaskComparison): What :func:`compare_masks` returned.

    Returns:
        str: The per-layer table (size, density per checkpoint, IoU with
        the first; a total row), the collapsed layers, the IoU of every
        pair (with more than two checkpoints) and, if counted, the
        effective params and FLOPs.
    """
    labels = comparison.labels
    unit = 'params' if comparison.kind == 'weight' else 'channels'
    others = sorted(comparison.layer_iou)
    fields = (['layer', unit] + [f'density {label}' for label in labels] +
              [f'IoU {labels[j]} vs {labels[0]}' for j in others])
    rows = []
    for k, name in enumerate(comparison.layers):
        rows.append([name, f'{comparison.stats[0][k].numel:,}'] +
                    [f'{stats[k].density:.2%}' for stats in comparison.stats] +
                    [f'{comparison.layer_iou[j][k]:.3f}' for j in others])
    total = sum(s.numel for s in comparison.stats[0])
    rows.append(['total', f'{total:,}'] + [
        f'{1 - sum(s.zeros for s in stats) / total:.2%}'
        for stats in comparison.stats
    ] + [f'{comparison.overall_iou[(0, j)]:.3f}' for j in others])
    lines = [
        f'kept sets: {KINDS[comparison.kind]}',
        render_table(fields, rows)
    ]
    lines.append('collapsed layers (density 0):')
    for label, names in zip(labels, comparison.collapsed):
        lines.append(f'  {label}: {", ".join(names) if names else "none"}')
    if len(labels) > 2:
        matrix = [[labels[i]] + [
            '1.000' if i == j else
            f'{comparison.overall_iou[(min(i, j), max(i, j))]:.3f}'
            for j in range(len(labels))
        ] for i in range(len(labels))]
        lines += [
            'overall IoU of the kept sets, every pair:',
            render_table(['IoU'] + labels, matrix)
        ]
    if comparison.complexity is not None:
        rows = [[
            label, f'{c.params:,}', f'{c.effective_params:,}',
            f'{c.effective_params / c.params:.3f}', f'{c.flops:,}',
            f'{c.effective_flops:,}', f'{c.effective_flops / c.flops:.3f}'
        ] for label, c in zip(labels, comparison.complexity)]
        lines += [
            'params and FLOPs, dense and effective (pruned weights and '
            'removed channels do no work):',
            render_table([
                'checkpoint', 'params', 'effective params', 'params ratio',
                'FLOPs', 'effective FLOPs', 'FLOPs ratio'
            ], rows)
        ]
    return '\n'.join(lines)


def plot_densities(comparison: MaskComparison, out: str) -> None:
    """Density per layer, one line per checkpoint, written as an image.

    Args:
        comparison (MaskComparison): What :func:`compare_masks` returned.
        out (str): Image path (e.g. ``.png``).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [name.rsplit('.weight', 1)[0] for name in comparison.layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(names)), 4))
    for label, stats in zip(comparison.labels, comparison.stats):
        ax.plot(range(len(names)), [s.density for s in stats],
                marker='o',
                markersize=3,
                label=label)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel('density (kept fraction)')
    what = 'weights' if comparison.kind == 'weight' else 'channels'
    ax.set_title(f'per-layer density of the kept {what}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
