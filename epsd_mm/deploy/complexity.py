"""Params and FLOPs of a pruned network, counting only weights that work.

Dense counts come from :mod:`mmengine.analysis` (``parameter_count`` and
``FlopAnalyzer``, which counts one multiply-accumulate as one FLOP). A
pruned weight stores nothing and computes nothing:

* effective params = all params - pruned weights;
* effective FLOPs of a convolution or linear layer = its dense FLOPs times
  the density of its weight. This is exact, not an estimate: every weight
  entry of a (grouped, dilated, strided) convolution or linear layer takes
  part in the same number of multiply-accumulates, one per output position.
  mmengine counts neither bias additions nor anything else in these layers.

Masked parameters of other modules (e.g. the ``in_proj_weight`` of
``nn.MultiheadAttention``, whose module also does attention products) keep
their dense FLOPs, with a warning.
"""
import warnings
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from mmengine.analysis import FlopAnalyzer, parameter_count
from prettytable import PrettyTable
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from epsd_mm.pruning import get_masks

#: Modules whose FLOPs scale with the density of their ``weight``.
WEIGHT_BOUND = (_ConvNd, nn.Linear)


class PartComplexity(NamedTuple):
    """Dense and effective complexity of one part of a model.

    Attributes:
        name (str): Top-level child (``backbone``, ``decode_head``, ...) or
            ``'total'``.
        params (int): Parameters.
        effective_params (int): Parameters minus pruned weights.
        flops (int, optional): FLOPs of one forward pass on the inputs
            given; None when no inputs were given.
        effective_flops (int, optional): FLOPs minus those of pruned
            weights.
    """
    name: str
    params: int
    effective_params: int
    flops: Optional[int] = None
    effective_flops: Optional[int] = None


def zero_weight_masks(model: nn.Module) -> Dict[str, Tensor]:
    """Non-zero patterns of the convolution and linear weights that have
    zeros: the masks of a folded model, whose masks are gone but whose
    pruned weights are exactly zero.

    Args:
        model (nn.Module): E.g. loaded from a folded checkpoint.

    Returns:
        dict[str, Tensor]: Weight name to ``weight != 0``.
    """
    return {
        f'{name}.weight' if name else 'weight': module.weight != 0
        for name, module in model.named_modules()
        if isinstance(module, WEIGHT_BOUND) and (module.weight == 0).any()
    }


def _part(name: str) -> str:
    return name.split('.', 1)[0]


def _flop_savings(model: nn.Module, masks: Mapping[str, Tensor],
                  flops: Mapping[str, int]) -> Dict[str, float]:
    """FLOPs pruned weights no longer do, by masked parameter name."""
    savings, dense_counted = {}, []
    for name, mask in masks.items():
        module_name = name.rpartition('.')[0]
        module = model.get_submodule(module_name)
        if isinstance(module, WEIGHT_BOUND) and name.endswith('weight'):
            pruned = int((~mask.bool()).sum())
            savings[name] = flops.get(module_name, 0) * pruned / mask.numel()
        else:
            dense_counted.append(name)
    if dense_counted:
        warnings.warn(
            f'{len(dense_counted)} masked parameters are not the weight of '
            'a convolution or linear layer; their FLOPs are counted dense: '
            f'{", ".join(dense_counted[:5])}')
    return savings


def model_complexity(
        model: nn.Module,
        inputs: Union[None, Tensor, Tuple] = None,
        masks: Optional[Mapping[str, Tensor]] = None) -> List[PartComplexity]:
    """Dense and effective params (and FLOPs) per part and in total.

    Args:
        model (nn.Module): The model; for FLOPs in eval mode (the forward
            pass is traced once).
        inputs (Tensor | tuple, optional): Arguments of one forward pass
            (``model(*inputs)``; an MMEngine model runs in ``'tensor'``
            mode). None counts params only, without running the model.
            Defaults to None.
        masks (Mapping[str, Tensor], optional): Keep-mask per parameter
            name. Defaults to the model's own masks
            (:func:`~epsd_mm.pruning.get_masks`).

    Returns:
        list[PartComplexity]: One row per top-level child with params or
        FLOPs, then the ``'total'`` row.
    """
    masks = get_masks(model) if masks is None else masks
    params = parameter_count(model)
    pruned: Dict[str, int] = {}
    for name, mask in masks.items():
        pruned[_part(name)] = pruned.get(_part(name), 0) + int(
            (~mask.bool()).sum())
    flops: Dict[str, int] = {}
    saved: Dict[str, float] = {}
    if inputs is not None:
        analyzer = FlopAnalyzer(
            model, inputs if isinstance(inputs, tuple) else (inputs, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = dict(analyzer.by_module())
        for name, amount in _flop_savings(model, masks, flops).items():
            saved[_part(name)] = saved.get(_part(name), 0.0) + amount

    def row(name: str, key: str, n_pruned: int,
            n_saved: float) -> PartComplexity:
        n_params = params.get(key, 0)
        if inputs is None:
            return PartComplexity(name, n_params, n_params - n_pruned)
        n_flops = flops.get(key, 0)
        return PartComplexity(name, n_params, n_params - n_pruned, n_flops,
                              n_flops - round(n_saved))

    rows = [
        row(name, name, pruned.get(name, 0), saved.get(name, 0.0))
        for name, _ in model.named_children()
        if params.get(name, 0) or flops.get(name, 0)
    ]
    rows.append(row('total', '', sum(pruned.values()), sum(saved.values())))
    return rows


def format_complexity_table(rows: List[PartComplexity]) -> str:
    """Render :func:`model_complexity` rows as a table.

    Args:
        rows (list[PartComplexity]): The rows.

    Returns:
        str: Params and FLOPs, dense and effective, with their ratio.
    """
    with_flops = rows[-1].flops is not None
    return render_table(
        ['part', 'params', 'effective params', 'params ratio'] +
        (['FLOPs', 'effective FLOPs', 'FLOPs ratio'] if with_flops else []),
        [[r.name, f'{r.params:,}', f'{r.effective_params:,}',
          _ratio(r.effective_params, r.params)] +
         ([f'{r.flops:,}', f'{r.effective_flops:,}',
           _ratio(r.effective_flops, r.flops)] if with_flops else [])
         for r in rows])


def format_complexity_change(before: List[PartComplexity],
                             after: List[PartComplexity]) -> str:
    """Render effective params (and FLOPs) of a model before and after a
    change (e.g. pruning) side by side.

    Args:
        before (list[PartComplexity]): :func:`model_complexity` before.
        after (list[PartComplexity]): :func:`model_complexity` after.

    Returns:
        str: Per part, the effective counts before and after, and their
        ratio.
    """
    old = {r.name: r for r in before}
    with_flops = after[-1].flops is not None and before[-1].flops is not None
    cells = []
    for r in after:
        b = old.get(r.name, PartComplexity(r.name, 0, 0, 0, 0))
        cells.append([
            r.name, f'{b.effective_params:,}', f'{r.effective_params:,}',
            _ratio(r.effective_params, b.effective_params)
        ] + ([
            f'{b.effective_flops:,}', f'{r.effective_flops:,}',
            _ratio(r.effective_flops, b.effective_flops)
        ] if with_flops else []))
    return render_table(
        ['part', 'params before', 'params after', 'params ratio'] +
        (['FLOPs before', 'FLOPs after', 'FLOPs ratio']
         if with_flops else []), cells)


def _ratio(new: Optional[int], old: Optional[int]) -> str:
    return f'{new / old:.3f}' if old else '-'


def render_table(fields: List[str], rows: List[List[str]]) -> str:
    """A right-aligned table whose first column (the names) is
    left-aligned."""
    table = PrettyTable()
    table.field_names = fields
    for row in rows:
        table.add_row(row)
    table.align = 'r'
    table.align[fields[0]] = 'l'
    return table.get_string()
