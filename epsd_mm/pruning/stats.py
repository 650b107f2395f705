"""Per-layer sparsity statistics and a plain-text table of them."""
from typing import List, Mapping, NamedTuple, Sequence, Union

import torch.nn as nn
from torch import Tensor

from .masks import get_masks


class LayerSparsity(NamedTuple):
    """Sparsity of one weight tensor.

    Attributes:
        name (str): Parameter name.
        numel (int): Number of entries.
        zeros (int): Number of zero entries.
        density (float): Fraction of non-zero entries.
    """
    name: str
    numel: int
    zeros: int
    density: float

    @property
    def sparsity(self) -> float:
        """Fraction of zero entries."""
        return 1.0 - self.density


def _layer(name: str, tensor: Tensor) -> LayerSparsity:
    numel = tensor.numel()
    zeros = int((tensor == 0).sum())
    return LayerSparsity(name, numel, zeros, 1.0 - zeros / max(numel, 1))


def sparsity_stats(
        source: Union[nn.Module, Mapping[str, Tensor]]) -> List[LayerSparsity]:
    """Sparsity of every masked weight.

    Args:
        source (nn.Module | Mapping[str, Tensor]): A model, whose masked
            weights (see :func:`~epsd_mm.pruning.get_masks`) are inspected
            for actual zero entries, so weights revived by training would
            show; or a mapping of name to keep-mask, whose False/zero
            entries count as pruned.

    Returns:
        list[LayerSparsity]: One entry per masked weight, in model order.
    """
    if isinstance(source, nn.Module):
        params = dict(source.named_parameters())
        return [_layer(name, params[name]) for name in get_masks(source)]
    return [_layer(name, mask) for name, mask in source.items()]


def overall_sparsity(stats: Sequence[LayerSparsity]) -> float:
    """Fraction of zero entries over all layers of ``stats``.

    Args:
        stats (Sequence[LayerSparsity]): Per-layer statistics.

    Returns:
        float: Total zeros divided by total entries (0.0 for no layers).
    """
    numel = sum(s.numel for s in stats)
    return sum(s.zeros for s in stats) / numel if numel else 0.0


def format_sparsity_table(stats: Sequence[LayerSparsity]) -> str:
    """Render per-layer statistics as an aligned plain-text table.

    Args:
        stats (Sequence[LayerSparsity]): Per-layer statistics.

    Returns:
        str: Table with a header, one row per layer and a total row.
    """
    if not stats:
        return 'no masked weights'
    numel = sum(s.numel for s in stats)
    zeros = sum(s.zeros for s in stats)
    rows = [(s.name, s.numel, s.zeros, s.density) for s in stats]
    rows.append(('total', numel, zeros, 1.0 - overall_sparsity(stats)))
    cells = [(name, f'{n:,}', f'{z:,}', f'{d:.2%}', f'{1 - d:.2%}')
             for name, n, z, d in rows]
    header = ('layer', 'params', 'zeros', 'density', 'sparsity')
    widths = [max(len(row[i]) for row in cells + [header]) for i in range(5)]

    def line(row) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))
        return '  '.join([first, *rest])

    rule = '-' * len(line(header))
    body = [line(row) for row in cells]
    return '\n'.join([line(header), rule, *body[:-1], rule, body[-1]])
