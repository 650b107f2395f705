"""Physically remove channels and persist the slim architecture.

:func:`slim_channels` removes the channels a keep-mask drops with
torch-pruning's surgery (every coupled layer's out-channels, and the
in-channels of every layer consuming them, heads included). It returns a
*slim spec*, a small JSON-able dict with the dense and slim channel counts
of every changed layer::

    {'format': 'epsd_mm.slim', 'version': 1,
     'layers': {'backbone.layer1.0.conv1': {'type': 'Conv2d',
                                            'out_channels': [64, 32],
                                            'in_channels': [64, 64]}, ...},
     'channels': {'total': 960, 'kept': 480},
     'groups': {'backbone.layer1.0.conv1': {'channels': 64,
                                            'kept': [0, 3, 4, ...]}, ...}}

(``channels``: the channels in scope, counted per group, of the dense model
and kept; ``groups``: per channel group, by its root layer, its dense
channel count and the indices of the channels kept, which tools such as
``tools/analysis/compare_masks.py`` compare. Specs of epsd_mm before
``groups`` existed lack it; nothing else reads it.) Store it with the
checkpoint (e.g. in its ``meta``): :func:`rebuild_slim` replays it on a
freshly built dense model, after which the slim state dict loads. Only
the shapes are replayed (the kept channels' weights come from the state
dict), so no tracing and no example input are needed.

The slim model records its spec (:func:`get_slim_spec`), so whoever saves
or exports it later finds it; slimming a slim model again records the
composition of both specs, still relative to the dense model.

torch-pruning replaces the pruned ``nn.Parameter`` objects: an optimizer
built before slimming must be pointed at the new ones
(:func:`rebind_optimizer`), and a DDP wrapper rebuilt.
"""
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.optim import Optimizer

from .channels import CHANNEL_TYPES, ChannelGraph, torch_pruning
from .masks import get_masks

SPEC_FORMAT = 'epsd_mm.slim'
SPEC_VERSION = 1

# Attribute of a slim model holding its spec (a plain dict, outside the
# state dict: it describes shapes, not weights).
_SPEC_ATTR = '_epsd_slim_spec'


def _pruner(module: nn.Module) -> Any:
    """torch-pruning's pruning function for the type of ``module``."""
    tp = torch_pruning()
    return tp.pruner.function.PrunerBox[tp.ops.module2type(module)]


def layer_channels(model: nn.Module) -> Dict[str, Tuple[str, int, int]]:
    """Output and input channel counts of every channel-carrying layer.

    Args:
        model (nn.Module): The model.

    Returns:
        dict[str, tuple[str, int, int]]: Module name to ``(type name,
        out_channels, in_channels)`` for every Conv/Linear/norm/PReLU layer
        (see :data:`~.channels.CHANNEL_TYPES`).
    """
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, CHANNEL_TYPES):
            pruner = _pruner(module)
            counts[name] = (type(module).__name__,
                            int(pruner.get_out_channels(module)),
                            int(pruner.get_in_channels(module)))
    return counts


def get_slim_spec(model: nn.Module) -> Optional[dict]:
    """The slim spec of a model slimmed or rebuilt here, else None.

    Args:
        model (nn.Module): The model (unwrapped, not DDP).

    Returns:
        dict | None: A copy of the spec (see the module docstring).
    """
    spec = model.__dict__.get(_SPEC_ATTR)
    return None if spec is None else _copied(spec)


def _copied(spec: Mapping) -> dict:
    """A JSON-normalised copy: tuples become lists, as after a round trip
    through a checkpoint or a config file."""
    return json.loads(json.dumps(spec))


def compose_slim_specs(first: Mapping, second: Mapping) -> dict:
    """The spec of slimming by ``first``, then by ``second``.

    Args:
        first (Mapping): Spec of the dense model's slimming.
        second (Mapping): Spec of slimming the result again (its dense
            counts are ``first``'s slim counts).

    Returns:
        dict: One spec from the dense model to the final one.
    """
    check_slim_spec(first)
    check_slim_spec(second)
    layers = _copied(first['layers'])
    for name, layer in second['layers'].items():
        merged = _copied(layer)
        if name in layers:
            merged['out_channels'][0] = layers[name]['out_channels'][0]
            merged['in_channels'][0] = layers[name]['in_channels'][0]
        layers[name] = merged
    spec = dict(format=SPEC_FORMAT, version=SPEC_VERSION, layers=layers)
    if 'channels' in first and 'channels' in second:
        spec['channels'] = dict(
            total=first['channels']['total'],
            kept=second['channels']['kept'])
    if 'groups' in first and 'groups' in second:
        spec['groups'] = _compose_groups(first['groups'], second['groups'])
    return spec


def _compose_groups(first: Mapping, second: Mapping) -> dict:
    """Kept channels of two slimmings, as indices of the dense groups.

    Channel ``c`` of a group of the second slimming is output channel ``c``
    of its (already slim) root layer, i.e. the dense channel
    ``first[name]['kept'][c]``.
    """
    groups = _copied(first)
    for name, group in second.items():
        if name in groups:
            dense = groups[name]['kept']
            groups[name]['kept'] = [dense[c] for c in group['kept']]
        else:
            groups[name] = _copied(group)
    return groups


def slim_channels(graph: ChannelGraph, keep: Mapping[str, Tensor]) -> dict:
    """Remove the channels that ``keep`` drops from ``graph.model``.

    Every group's dropped channels are cut from all its coupled layers, and
    the input channels of the layers consuming them are adapted (inside or
    outside the scope). The model is changed in place and records the
    returned spec (composed with its earlier one, if it was slim already);
    ``graph`` is spent.

    Args:
        graph (ChannelGraph): The groups of the dense model.
        keep (Mapping[str, Tensor]): Bool keep-mask (True = kept) per group
            name, one entry per group of ``graph``, e.g. from
            :func:`~.channel_selection.select_channels`.

    Returns:
        dict: The slim spec (see the module docstring) from the dense
        model, for :func:`rebuild_slim`.
    """
    graph.check_not_slimmed()
    model = graph.model
    if get_masks(model):
        raise ValueError(
            f'{type(model).__name__} carries weight masks (e.g. '
            f'{next(iter(get_masks(model)))}); removing channels of a '
            'weight-masked model is not supported. Prune either weights '
            '(masks) or channels, or call remove_masks(model) first.')
    unknown = sorted(set(keep) - set(graph.groups))
    missing = [name for name in graph.groups if name not in keep]
    if unknown or missing:
        raise ValueError(
            'keep must hold one mask per channel group of the graph; '
            f'unknown groups: {unknown or "none"}, missing groups: '
            f'{missing or "none"}. Pass the output of select_channels on '
            'scores of this graph.')
    removed: Dict[str, List[int]] = {}
    for name, group in graph.groups.items():
        mask = keep[name]
        if mask.shape != (group.num_channels, ):
            raise ValueError(
                f'keep mask of group {name!r} has shape {tuple(mask.shape)}'
                f', the group has {group.num_channels} channels')
        if not mask.any():
            raise ValueError(
                f'keep mask of group {name!r} keeps no channel; a group '
                'needs at least one (see min_density of select_channels)')
        removed[name] = (~mask.bool()).nonzero().flatten().tolist()

    before = layer_channels(model)
    groups = {name: graph.torch_pruning_group(name) for name in removed}
    try:
        for name, idxs in removed.items():
            if idxs:
                # Root indices are output channels of the root layer, which
                # no other group changes: each group is cut as it was traced.
                groups[name].prune(idxs=idxs)
    finally:
        graph.mark_slimmed()  # even half-way, the groups are stale
    after = layer_channels(model)
    layers = {}
    for name, (type_name, out_dense, in_dense) in before.items():
        _, out_slim, in_slim = after[name]
        if (out_slim, in_slim) != (out_dense, in_dense):
            layers[name] = dict(
                type=type_name,
                out_channels=[out_dense, out_slim],
                in_channels=[in_dense, in_slim])
    spec = dict(
        format=SPEC_FORMAT,
        version=SPEC_VERSION,
        layers=layers,
        channels=dict(
            total=graph.num_channels,
            kept=sum(int(mask.sum()) for mask in keep.values())),
        groups={
            name: dict(
                channels=group.num_channels,
                kept=keep[name].bool().nonzero().flatten().tolist())
            for name, group in graph.groups.items()
        })
    earlier = get_slim_spec(model)
    if earlier is not None:
        spec = compose_slim_specs(earlier, spec)
    model.__dict__[_SPEC_ATTR] = _copied(spec)
    return spec


def rebind_optimizer(optimizer: Optimizer, before: Mapping[str, Tensor],
                     model: nn.Module) -> None:
    """Point an optimizer built before slimming at the slim parameters.

    Each parameter of the optimizer's groups is replaced by the model's
    current parameter of the same name; group options (lr, weight decay,
    ...) and anything holding the optimizer (e.g. LR schedulers) stay as
    they are. Only valid before the first step: optimizer state (momentum)
    of the dense tensors cannot be carried over.

    Args:
        optimizer (Optimizer): The optimizer (for an MMEngine
            ``OptimWrapper`` pass ``optim_wrapper.optimizer``).
        before (Mapping[str, Tensor]): ``dict(model.named_parameters())``
            taken before slimming.
        model (nn.Module): The slim model.

    Raises:
        ValueError: If the optimizer has state or holds a parameter not in
            ``before``.
    """
    names = {id(p): name for name, p in before.items()}
    current = dict(model.named_parameters())
    if any(optimizer.state.get(p) for g in optimizer.param_groups
           for p in g['params']):
        raise ValueError(
            'the optimizer has already stepped (it holds state such as '
            'momentum of the dense parameters); remove channels before the '
            'first optimizer step, or build a new optimizer')
    unknown = [
        p for g in optimizer.param_groups for p in g['params']
        if id(p) not in names
    ]
    if unknown:
        raise ValueError(
            f'{len(unknown)} optimizer parameter(s) are not among `before` '
            '(the named parameters taken before slimming); pass '
            'dict(model.named_parameters()) of the same model')
    for group in optimizer.param_groups:
        group['params'] = [current[names[id(p)]] for p in group['params']]


def check_slim_spec(spec: Mapping) -> None:
    """Raise if ``spec`` is not a slim spec this version can replay.

    Args:
        spec (Mapping): What :func:`slim_channels` returned.
    """
    if not isinstance(spec, Mapping) or spec.get('format') != SPEC_FORMAT:
        raise ValueError(
            f"not a slim spec: expected a dict with format={SPEC_FORMAT!r} "
            f'as returned by slim_channels, got {type(spec).__name__}')
    if spec.get('version') != SPEC_VERSION:
        raise ValueError(
            f"slim spec version {spec.get('version')!r} is not supported "
            f'by this epsd_mm (version {SPEC_VERSION}); use the epsd_mm '
            'version that wrote the checkpoint')


def rebuild_slim(model: nn.Module, spec: Mapping) -> None:
    """Give a freshly built dense model the slim architecture of ``spec``.

    Each layer listed in the spec gets its slim channel counts (trailing
    channels removed with torch-pruning's layer pruners, which update the
    layer's attributes, weights, biases and running statistics alike); the
    weights are placeholders until the slim state dict is loaded. The model
    records the spec; calling it again with the same spec does nothing.

    Args:
        model (nn.Module): The dense model, built from the same config as
            the one that was slimmed (unwrapped, not DDP).
        spec (Mapping): The slim spec returned by :func:`slim_channels`.

    Raises:
        ValueError: If the spec does not fit the model (a layer is missing,
            has another type or other dense channel counts), or the model is
            slim by another spec already.
    """
    check_slim_spec(spec)
    current = get_slim_spec(model)
    if current is not None:
        if current == _copied(spec):
            return
        raise ValueError(
            f'{type(model).__name__} is slim already, by another slim spec '
            f"({len(current['layers'])} changed layers, vs "
            f"{len(spec['layers'])} in the given one); rebuild_slim needs "
            'the dense model built from the config.')
    modules = dict(model.named_modules())
    problems = []
    for name, layer in spec['layers'].items():
        module = modules.get(name)
        if module is None:
            problems.append(f'{name}: no such layer in the model')
            continue
        if type(module).__name__ != layer['type']:
            problems.append(f"{name}: the spec has a {layer['type']}, the "
                            f'model a {type(module).__name__}')
            continue
        pruner = _pruner(module)
        dense = (pruner.get_out_channels(module),
                 pruner.get_in_channels(module))
        if dense != (layer['out_channels'][0], layer['in_channels'][0]):
            problems.append(
                f"{name}: the spec was made from {layer['out_channels'][0]}"
                f" out / {layer['in_channels'][0]} in channels, the model "
                f'has {dense[0]} / {dense[1]}')
    if problems:
        raise ValueError(
            f'the slim spec does not fit {type(model).__name__} '
            f"({len(problems)} layer(s)): {'; '.join(problems[:5])}. Build "
            'the model from the config the slim checkpoint was trained '
            'with, and call rebuild_slim on the dense model (once).')

    for name, layer in spec['layers'].items():
        module = modules[name]
        pruner = _pruner(module)
        out_slim, in_slim = layer['out_channels'][1], layer['in_channels'][1]
        out_now = pruner.get_out_channels(module)
        if out_now != out_slim:
            pruner(module, range(out_slim, out_now), to_output=True)
        # Re-read: for BatchNorm and depthwise convs, cutting outputs also
        # cut the inputs.
        in_now = pruner.get_in_channels(module)
        if in_now != in_slim:
            pruner(module, range(in_slim, in_now), to_output=False)
    model.__dict__[_SPEC_ATTR] = _copied(spec)


def shape_mismatches(model: nn.Module, state_dict: Mapping[str, Tensor]
                     ) -> List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]:
    """Tensors of a state dict whose shapes differ from the model's.

    Args:
        model (nn.Module): The model.
        state_dict (Mapping[str, Tensor]): E.g. a checkpoint's
            ``'state_dict'`` (keys as in ``model.state_dict()``).

    Returns:
        list[tuple[str, tuple, tuple]]: ``(name, state-dict shape, model
        shape)`` for every key both hold with different shapes.
    """
    own = model.state_dict()
    return [(name, tuple(t.shape), tuple(own[name].shape))
            for name, t in state_dict.items()
            if name in own and isinstance(t, torch.Tensor)
            and t.shape != own[name].shape]


def is_narrower(mismatches: Sequence[Tuple[str, Tuple[int, ...],
                                           Tuple[int, ...]]]) -> bool:
    """Whether every mismatched tensor of :func:`shape_mismatches` is
    narrower than the model's (a slim state dict for a dense model).

    Args:
        mismatches (Sequence[tuple]): ``(name, state dict shape, model
            shape)`` triples.
    """
    return all(
        len(got) == len(want) and all(g <= w for g, w in zip(got, want))
        for _, got, want in mismatches)


def check_state_dict_shapes(model: nn.Module,
                            state_dict: Mapping[str, Tensor]) -> None:
    """Raise a clear error if a state dict does not fit the model's shapes.

    A channel-pruned (slim) state dict given to a dense model is named as
    such, with the fix (rebuild the slim architecture from the checkpoint's
    slim spec first).

    Args:
        model (nn.Module): The model about to load ``state_dict``.
        state_dict (Mapping[str, Tensor]): The state dict.

    Raises:
        ValueError: Naming the mismatched tensors and the fix.
    """
    mismatches = shape_mismatches(model, state_dict)
    if not mismatches:
        return
    shown = '; '.join(f'{name}: state dict {tuple(got)}, model {tuple(want)}'
                      for name, got, want in mismatches[:5])
    more = f' (and {len(mismatches) - 5} more)' if len(mismatches) > 5 else ''
    if is_narrower(mismatches):
        hint = ('The state dict holds a channel-pruned (slim) network and '
                'the model is dense: rebuild the slim architecture first '
                'with rebuild_slim(model, spec), using the slim spec saved '
                'with the checkpoint, then load the weights.')
    else:
        hint = ('The state dict comes from a different architecture: build '
                'the model from the config it was trained with (for a slim '
                'checkpoint, rebuild_slim the dense model with its spec '
                'exactly once).')
    raise ValueError(f'{len(mismatches)} tensor(s) of the state dict do not '
                     f'fit {type(model).__name__}: {shown}{more}. {hint}')


def format_slim_table(spec: Mapping) -> str:
    """A plain-text table of the changed layers of a slim spec.

    Args:
        spec (Mapping): The slim spec.

    Returns:
        str: One line per changed layer: name, out and in channels dense ->
        slim.
    """
    check_slim_spec(spec)
    rows = [('layer', 'out (dense -> slim)', 'in (dense -> slim)')]
    for name, layer in spec['layers'].items():
        out, inp = layer['out_channels'], layer['in_channels']
        rows.append((name, f'{out[0]} -> {out[1]}', f'{inp[0]} -> {inp[1]}'))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths))
                     for row in rows)
