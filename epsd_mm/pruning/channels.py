"""Groups of output channels that must be removed together.

torch-pruning (DepGraph) traces the model and groups coupled channels: a
conv's filters with the BatchNorm channels that follow it, every layer
feeding the same residual sum, the in-channels of every layer consuming
them (heads included). :class:`ChannelGraph` turns its groups into a plain
description that the channel criteria score (:mod:`.channel_scores`) and
keeps torch-pruning's graph for the surgery (:mod:`.slimming`).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from .functional import preserved_state
from .params import Scopes, normalize_scopes, scope_matches

#: Module types whose output channels are cut (and whose parameters carry a
#: channel's entries). Every module of these types must be reached by the
#: traced forward, or the surgery could leave its input channels stale.
CHANNEL_TYPES: Tuple[type, ...] = (_ConvNd, nn.Linear, _BatchNorm,
                                   nn.LayerNorm, nn.GroupNorm, _InstanceNorm,
                                   nn.PReLU)
#: Module types that root a group: their output channels are the units
#: scored and removed.
ROOT_TYPES: Tuple[type, ...] = (_ConvNd, nn.Linear)

ForwardFn = Callable[[nn.Module, Any], Any]


def torch_pruning():
    """The ``torch_pruning`` module, or an error saying how to install it.

    Channel pruning needs torch-pruning's dependency graph; weight pruning
    does not, so it is imported only here.
    """
    try:
        import torch_pruning as tp
    except ImportError as error:
        raise ImportError(
            'channel pruning needs torch-pruning (its dependency graph '
            'groups coupled channels), which is not installed: pip install '
            "'torch-pruning>=1.6' (or pip install 'epsd_mm[structured]'). "
            'Weight pruning works without it.') from error
    return tp


@dataclass(frozen=True)
class ChannelMember:
    """The entries of one parameter that belong to a group's channels.

    Attributes:
        param (str): Parameter name, as in ``model.named_parameters()``.
        dim (int): Dimension of the parameter that indexes output channels.
        positions (tuple[int, ...]): Indices along ``dim``.
        channels (tuple[int, ...]): The group channel of each position.
        is_filter (bool): Whether the parameter is a Conv/Linear weight (its
            slices along ``dim`` are filters).
    """
    param: str
    dim: int
    positions: Tuple[int, ...]
    channels: Tuple[int, ...]
    is_filter: bool


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels removed together, and what they touch.

    Channel ``c`` of the group is output channel ``c`` of its root module.

    Attributes:
        name (str): Name of the root module (Conv/Linear).
        num_channels (int): Number of channels.
        members (tuple[ChannelMember, ...]): Every parameter entry scaled by
            the channels (weights, biases, norm weights and biases of all
            coupled layers).
        modules (tuple[str, ...]): Modules whose output channels are cut.
        consumers (tuple[str, ...]): Modules whose input channels are cut
            with them (inside or outside the scope).
    """
    name: str
    num_channels: int
    members: Tuple[ChannelMember, ...]
    modules: Tuple[str, ...]
    consumers: Tuple[str, ...]


def _channel_sums(values: Mapping[str, Tensor], group: ChannelGroup,
                  filters_only: bool) -> Tensor:
    """Sum of ``values`` over each channel of one group."""
    members = [m for m in group.members if m.is_filter or not filters_only]
    if not members:
        what = 'filters' if filters_only else 'parameter entries'
        raise ValueError(
            f'channel group {group.name!r} has no {what} to score')
    first = values[members[0].param]
    total = torch.zeros(
        group.num_channels, dtype=first.dtype, device=first.device)
    for member in members:
        value = values[member.param].movedim(member.dim, 0)
        positions = torch.tensor(member.positions, device=value.device)
        channels = torch.tensor(member.channels, device=total.device)
        per_position = value[positions].reshape(len(positions), -1).sum(1)
        total.index_add_(0, channels, per_position.to(total))
    return total


def _channel_dim(module: nn.Module, local: str) -> int:
    """Dimension of ``module.<local>`` that indexes output channels."""
    if isinstance(module, _ConvNd) and module.transposed and local == 'weight':
        return 1
    if isinstance(module, nn.LayerNorm):
        return getattr(module, local).dim() - 1
    return 0


class ChannelGraph:
    """The coupled output-channel groups of a model, traced by torch-pruning.

    Groups are rooted at the Conv/Linear layers inside ``scopes``; a group is
    kept only if every layer whose output channels it cuts lies inside the
    scopes. Layers outside (e.g. the decode head) are never cut, but their
    input channels are adapted when the channels feeding them are removed.
    A group whose channels reach an output of the traced forward (e.g. the
    class channels of a classifier's or a decode head's last layer: no layer
    consumes them) or an unwrapped ``nn.Parameter`` (e.g. a ViT's position
    embedding) is left out; :attr:`output_groups` names the former. So is a
    group that reaches an ``nn.MultiheadAttention`` (its embedding width
    must stay a multiple of its heads; :attr:`attention_groups` names them):
    in a transformer the MLP hidden channels are cut, the residual stream
    the attention reads is kept whole.

    Tracing runs one forward of ``forward_fn(model, example_inputs)`` (or
    ``model(example_inputs)``) with autograd on; it must reach every
    parametrised layer that is used in training, or removing channels could
    leave a layer it missed with stale input channels. For an mmseg
    ``EncoderDecoder`` ``mode='tensor'`` runs the decode head only, so run
    the auxiliary heads too, e.g.::

        def forward_fn(model, inputs):
            feats = model.extract_feat(inputs)
            return [model.decode_head(feats), model.auxiliary_head(feats)]

    The model's parameters, buffers and train/eval modes are unchanged.

    Args:
        model (nn.Module): The dense model (unwrapped, not DDP).
        example_inputs (Any): Inputs of ``forward_fn`` (e.g. one image batch
            ``torch.randn(1, 3, 64, 64)``); their size only matters for
            tracing, not for the groups.
        forward_fn (Callable, optional): ``forward_fn(model,
            example_inputs)`` returning a tensor or a (nested) list/tuple/
            dict of tensors. Defaults to None (``model(example_inputs)``).
        scopes (str | Sequence[str]): Module names or globs (see
            :func:`~epsd_mm.pruning.params.scope_matches`) whose output
            channels may be cut. Defaults to ``('backbone',)``.

    Attributes:
        model (nn.Module): The model.
        groups (dict[str, ChannelGroup]): Groups by root module name, in
            module order.
        output_groups (list[str]): Root modules inside the scopes whose
            output channels are outputs of the traced forward (e.g. class
            channels), never cut.
        attention_groups (list[str]): Root modules inside the scopes whose
            output channels reach an ``nn.MultiheadAttention``, never cut.
    """

    def __init__(self,
                 model: nn.Module,
                 example_inputs: Any,
                 forward_fn: Optional[ForwardFn] = None,
                 scopes: Scopes = ('backbone', )) -> None:
        self.model = model
        self.scopes = normalize_scopes(scopes)
        self.is_slimmed = False
        tp = torch_pruning()
        names = {}
        for name, module in model.named_modules():
            names.setdefault(module, name)
        with preserved_state(model), torch.enable_grad():
            self.graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs,
                forward_fn=forward_fn,
                verbose=False)
        self._check_traced(names)
        outside = [
            module for module, name in names.items()
            if not self._in_scope(name)
        ]
        order = {name: i for i, name in enumerate(names.values())}
        found: List[Tuple[ChannelGroup, Any]] = []
        self.output_groups: List[str] = []
        self.attention_groups: List[str] = []
        for tp_group in self.graph.get_all_groups(
                ignored_layers=outside, root_module_types=ROOT_TYPES):
            if any(isinstance(item.dep.target.module, nn.MultiheadAttention)
                   for item in tp_group):
                self.attention_groups.append(
                    names[tp_group[0].dep.target.module])
                continue
            group = self._describe(tp_group, names)
            if group is None:
                continue
            if not group.consumers:
                # nothing reads these channels: they leave the forward
                self.output_groups.append(group.name)
            else:
                found.append((group, tp_group))
        self.output_groups.sort(key=order.__getitem__)
        self.attention_groups.sort(key=order.__getitem__)
        if not found:
            raise ValueError(
                f'no output channel of {type(model).__name__} can be cut '
                f'inside scopes {self.scopes!r}: no Conv/Linear there whose '
                'channels only reach layers inside the scopes. Check the '
                "scopes (e.g. ('backbone',)) and that forward_fn runs them.")
        found.sort(key=lambda pair: order[pair[0].name])
        self.groups: Dict[str, ChannelGroup] = {
            group.name: group
            for group, _ in found
        }
        self._tp_groups = {group.name: tp_group for group, tp_group in found}

    def _in_scope(self, module_name: str) -> bool:
        return any(scope_matches(module_name, s) for s in self.scopes)

    def _check_traced(self, names: Dict[nn.Module, str]) -> None:
        # nn.MultiheadAttention runs its out_proj functionally, never as a
        # module call: traced when the attention is
        inside_attention = {
            attention.out_proj
            for attention in names if isinstance(
                attention, nn.MultiheadAttention)
            and attention in self.graph.module2node
        }
        missed = [
            name for module, name in names.items()
            if isinstance(module, CHANNEL_TYPES) and any(
                True for _ in module.parameters(recurse=False))
            and module not in self.graph.module2node
            and module not in inside_attention
        ]
        if missed:
            shown = ', '.join(missed[:8]) + (' ...' if len(missed) > 8 else '')
            raise ValueError(
                f'forward_fn did not run {len(missed)} layer(s) of '
                f'{type(self.model).__name__}: {shown}. Removing channels '
                'that feed them would leave their inputs stale; pass a '
                'forward_fn that runs every layer used in training (for an '
                'mmseg segmentor also the auxiliary heads, e.g. '
                '`lambda m, x: [m.decode_head(m.extract_feat(x)), '
                'm.auxiliary_head(m.extract_feat(x))]`).')

    def _describe(self, tp_group: Any,
                  names: Dict[nn.Module, str]) -> Optional[ChannelGroup]:
        """A :class:`ChannelGroup` of a torch-pruning group, or None if it
        reaches an output or an unwrapped parameter."""
        optype = torch_pruning().ops.OPTYPE
        # A group reaching an unwrapped parameter cannot be described by
        # the slim spec; one reaching an output of the traced forward has a
        # fixed width.
        uncuttable = (optype.PARAMETER, optype.OUTPUT)
        root = tp_group[0].dep.target.module
        num_channels = self.graph.get_out_channels(root)
        members: List[ChannelMember] = []
        modules: List[str] = []
        consumers: List[str] = []
        for item in tp_group:
            module = item.dep.target.module
            if item.dep.target.type in uncuttable:
                return None
            if module not in names:  # torch-pruning's op placeholders
                continue
            name = names[module]
            if not self.graph.is_out_channel_pruning_fn(item.dep.handler):
                consumers.append(name)
                continue
            modules.append(name)
            if not isinstance(module, CHANNEL_TYPES):
                continue
            if any(r is None for r in item.root_idxs):
                continue
            out_channels = self.graph.get_out_channels(module)
            for local, param in module.named_parameters(recurse=False):
                dim = _channel_dim(module, local)
                if param.dim() == 0 or param.shape[dim] != out_channels:
                    continue  # e.g. a single-parameter PReLU
                members.append(
                    ChannelMember(
                        param=f'{name}.{local}' if name else local,
                        dim=dim,
                        positions=tuple(int(i) for i in item.idxs),
                        channels=tuple(int(i) for i in item.root_idxs),
                        is_filter=(local == 'weight' and isinstance(
                            module, ROOT_TYPES))))
        return ChannelGroup(
            name=names[root],
            num_channels=int(num_channels),
            members=tuple(members),
            modules=tuple(dict.fromkeys(modules)),
            consumers=tuple(dict.fromkeys(consumers)))

    @property
    def num_channels(self) -> int:
        """Channels in scope: the sum of the groups' channel counts."""
        return sum(g.num_channels for g in self.groups.values())

    def parameters(self) -> Dict[str, nn.Parameter]:
        """Every parameter holding a group's entries, by name.

        Returns:
            dict[str, nn.Parameter]: E.g. the ``params`` of
            :func:`~epsd_mm.pruning.criteria.prospr.prospr_meta_gradients`
            for channel masks.
        """
        self.check_not_slimmed()
        named = dict(self.model.named_parameters())
        return {
            m.param: named[m.param]
            for group in self.groups.values() for m in group.members
        }

    def channel_sums(self,
                     values: Mapping[str, Tensor],
                     filters_only: bool = False) -> Dict[str, Tensor]:
        """Sum element-wise values over each channel's entries, per group.

        E.g. the signed meta-gradients of element masks of
        :meth:`parameters`: by the chain rule their sum over a channel's
        entries is the gradient of that channel's mask.

        Args:
            values (Mapping[str, Tensor]): Tensor per parameter name, shaped
                like the parameter.
            filters_only (bool): Only sum over Conv/Linear weights.
                Defaults to False.

        Returns:
            dict[str, Tensor]: ``(num_channels,)`` sums per group name, in
            the values' dtype.
        """
        self.check_not_slimmed()
        return {
            name: _channel_sums(values, group, filters_only)
            for name, group in self.groups.items()
        }

    def torch_pruning_group(self, name: str) -> Any:
        """torch-pruning's group (all channels) of the group ``name``."""
        self.check_not_slimmed()
        return self._tp_groups[name]

    def mark_slimmed(self) -> None:
        """Record that channels were removed; frees the traced graph (it
        holds the autograd graph of the example forward)."""
        self.is_slimmed = True
        self.graph = None
        self._tp_groups = {}

    def check_not_slimmed(self) -> None:
        """Raise if channels were already removed (the groups are stale)."""
        if self.is_slimmed:
            raise RuntimeError(
                'this ChannelGraph describes the model before its channels '
                'were removed; build a new ChannelGraph on the slim model to '
                'score or cut it again')
