"""PHEW: data-free biased random walks through the prunable layers.

PHEW (Patil & Dovrolis, "PHEW: Constructing sparse networks that learn fast
and generalize well without training data", ICML 2021) enables the weights
that random walks from input units to output units traverse. Each step
leaves the current unit for a unit of the next layer with probability
proportional to the L1 norm of the kernel connecting them, and enables one
entry of that kernel with probability proportional to ``|w|``. Walks
alternate between forward walks (from an input unit, seeds taken
round-robin) and backward walks (from an output unit, round-robin too) and
go on until the target number of weights is enabled.

The authors walk a plain chain of layers (with a special case for the 1x1
shortcut convolutions of their CIFAR ResNets). Here the chain is
generalised to the graph of the prunable layers, traced from the autograd
graph of one forward pass (:func:`trace_layer_graph`):

* layer ``A`` precedes layer ``B`` when ``A``'s output reaches ``B``'s
  input through non-prunable operations only (norms, activations,
  additions, pooling, reshapes, attention products, concatenations);
* the graph is transitively reduced: an edge ``A -> C`` is dropped when
  ``C`` is also reached from ``A`` through another successor of ``A``. So
  an identity skip connection is never a shortcut for a walk (the walk
  goes through the residual branch, as the authors' walks do), while the
  two branches of a block with a downsample convolution both remain: at
  such a fork a walk picks one successor uniformly, as the authors' walk
  picks the residual branch or the 1x1 shortcut conv with probability 1/2;
* units are channels (Conv) or features (Linear, attention projections).
  Between consecutive layers with equally many units a unit stays itself;
  when the next layer has ``f`` times the units (a flatten from Conv to
  Linear) a unit ``c`` maps to one of ``c*f ... c*f+f-1`` uniformly and
  back by ``// f``, as the authors' ``conv_to_linear_unit``; ``f`` times
  fewer units map the other way round, and any other mismatch to a
  uniformly random unit. This is an approximation where the unit counts
  come from something else than a flatten: a concatenation of branches
  (ASPP) is mapped as a flatten when its size is a multiple (the
  concatenation offsets are not traced), the packed Q/K/V projection of
  ``nn.MultiheadAttention`` (``3E`` units) to its output projection
  (``E``) by ``// 3``.

Walks start at the input units of the layers with no prunable predecessor
and at the output units of the layers with none after them.
"""
import math
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Set, Tuple)

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.conv import _ConvNd

from ..functional import (call_with_tensors, first_sample, plain_forward,
                          preserved_state)
from ..selection import check_sparsity, kept_count
from .base import CRITERIA, Criterion, ScoringInputs

LayerGraph = Tuple[List[str], Dict[str, List[str]], Dict[str, List[str]]]



def _output_nodes(out: Any) -> List[Any]:
    """The autograd nodes of every tensor in a (nested) output."""
    if isinstance(out, Tensor):
        return [out.grad_fn] if out.grad_fn is not None else []
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [node for o in out for node in _output_nodes(o)]
    return []


def _collect_nodes(roots: Sequence[Any]) -> List[Any]:
    """Every node of an autograd graph, children before their parents."""
    order, seen, stack = [], set(), [(root, False) for root in roots]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child, _ in node.next_functions
                     if child is not None and id(child) not in seen)
    return order


def _layer_ops(nodes: Sequence[Any], leaf_names: Mapping[int, str],
               x_id: int) -> Tuple[Dict[int, bool], Dict[int, str]]:
    """Which nodes depend on the input, and which apply a prunable weight.

    A node applies weight ``W`` (it is one of ``W``'s layer operations,
    e.g. ``ConvolutionBackward0`` or ``AddmmBackward0``) when it depends on
    the input and has a child that depends on ``W`` alone (the weight
    itself, or a transpose / view / split / standardisation of it).

    Returns:
        tuple: ``has_input`` by node id, and the weight name by id of the
        nodes applying one.
    """
    has_input: Dict[int, bool] = {}
    only_weight: Dict[int, Optional[str]] = {}  # None: no single weight
    applies: Dict[int, str] = {}
    for node in nodes:
        variable = getattr(node, 'variable', None)
        if variable is not None:  # AccumulateGrad of a leaf
            has_input[id(node)] = id(variable) == x_id
            only_weight[id(node)] = leaf_names.get(id(variable))
            continue
        children = [c for c, _ in node.next_functions if c is not None]
        has_input[id(node)] = any(has_input[id(c)] for c in children)
        weights = {only_weight[id(c)] for c in children
                   if not has_input[id(c)]} - {None}
        if has_input[id(node)]:
            only_weight[id(node)] = None
            if len(weights) == 1:
                applies[id(node)] = weights.pop()
        else:
            only_weight[id(node)] = weights.pop() if len(weights) == 1 \
                else None
    return has_input, applies


def _predecessors(nodes: Sequence[Any], has_input: Mapping[int, bool],
                  applies: Mapping[int, str]) -> Dict[str, Set[str]]:
    """Prunable layers whose output reaches each layer's input through
    non-prunable operations only."""
    preds: Dict[str, Set[str]] = {name: set() for name in applies.values()}
    for node in nodes:
        layer = applies.get(id(node))
        if layer is None:
            continue
        stack = [c for c, _ in node.next_functions
                 if c is not None and has_input[id(c)]]
        seen = set()
        while stack:
            child = stack.pop()
            if id(child) in seen:
                continue
            seen.add(id(child))
            if id(child) in applies:
                preds[layer].add(applies[id(child)])
                continue
            stack.extend(c for c, _ in child.next_functions
                         if c is not None and has_input[id(c)])
    return preds


def _topological(names: Sequence[str],
                 preds: Mapping[str, Set[str]]) -> List[str]:
    """Layers ordered so that each comes after its predecessors."""
    remaining = {name: set(preds.get(name, ())) for name in names}
    order: List[str] = []
    ready = [name for name in names if not remaining[name]]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other in names:
            if name in remaining[other]:
                remaining[other].discard(name)
                if not remaining[other] and other not in order \
                        and other not in ready:
                    ready.append(other)
    if len(order) != len(names):
        cyclic = [name for name in names if name not in order]
        raise ValueError(
            f'phew walks a graph of layers without cycles, but the weights '
            f'{cyclic[:3]} feed each other (a weight used by several layers '
            'of one forward pass?); exclude them from the pruning scopes')
    return order


def _transitive_reduction(order: Sequence[str],
                          preds: Mapping[str, Set[str]]
                          ) -> Dict[str, List[str]]:
    """Successors of every layer, without edges implied by longer paths."""
    index = {name: i for i, name in enumerate(order)}
    succs = {name: [] for name in order}
    for name in order:
        for pred in preds.get(name, ()):
            succs[pred].append(name)
    reach: Dict[str, int] = {}  # bitset of layers reachable, incl. itself
    for name in reversed(order):
        bits = 1 << index[name]
        for succ in succs[name]:
            bits |= reach[succ]
        reach[name] = bits
    reduced = {}
    for name in order:
        reduced[name] = sorted((
            succ for succ in succs[name]
            if not any(other != succ and reach[other] >> index[succ] & 1
                       for other in succs[name])), key=index.get)
    return reduced


def trace_layer_graph(model: nn.Module,
                      params: Mapping[str, Tensor],
                      input_shape: Sequence[int],
                      forward_fn: Optional[Callable[[nn.Module, Tensor],
                                                    Any]] = None
                      ) -> LayerGraph:
    """The graph of the prunable layers that PHEW's walks follow.

    The model runs once in eval mode on a zero input of ``input_shape``
    (weights substituted, nothing of the model modified); the autograd graph
    of the outputs gives which layer feeds which. See the module docstring
    for the rules.

    Args:
        model (nn.Module): The model.
        params (Mapping[str, Tensor]): Prunable weights by name.
        input_shape (Sequence[int]): Shape of the input, e.g.
            ``(1, 3, 64, 64)``.
        forward_fn (Callable, optional): ``forward_fn(model, x)``. Defaults
            to None (``model(x)``).

    Returns:
        tuple: ``(order, successors, predecessors)``: the layer names in
        topological order (layers the forward pass does not reach come
        first, as layers of their own), and the transitively reduced
        successors and predecessors of each.
    """
    forward_fn = forward_fn or plain_forward
    first = next(iter(params.values()))
    x = torch.zeros(tuple(input_shape), dtype=first.dtype,
                    device=first.device, requires_grad=True)
    leaves = {name: w.detach().requires_grad_(True)
              for name, w in params.items()}
    with preserved_state(model), torch.enable_grad():
        model.eval()
        out = call_with_tensors(model, leaves, forward_fn, x)
        nodes = _collect_nodes(_output_nodes(out))
        has_input, applies = _layer_ops(
            nodes, {id(w): name for name, w in leaves.items()}, id(x))
        preds = _predecessors(nodes, has_input, applies)
    names = list(params)
    order = _topological(names, preds)
    succs = _transitive_reduction(order, preds)
    reduced_preds = {name: [] for name in order}
    for name in order:
        for succ in succs[name]:
            reduced_preds[succ].append(name)
    return order, succs, reduced_preds


class _Layer:
    """A prunable weight seen as ``[out units, in units, kernel entries]``.

    Attributes:
        fwd_cdf (Tensor): ``[n_in, n_out]`` cumulative weights of the next
            unit, from an input unit (kernel L1 norms; uniform over the
            connected units where they are all zero, as the authors do).
        bwd_cdf (Tensor): ``[n_out, n_in]``, the same backwards.
        kernel_cdf (Tensor): ``[n_out, n_in, K]`` cumulative weights of a
            kernel entry (``|w|``; uniform where the kernel is zero).
        index (Tensor): ``[n_out, n_in, K]`` flat index into the weight
            (``-1`` where no weight connects the units, e.g. across groups).
    """

    def __init__(self, weight: Tensor, module: Optional[nn.Module]) -> None:
        absolute = weight.detach().abs().double()
        flat = torch.arange(weight.numel(), device=weight.device)
        self.kernel = self.dense(absolute, module)
        self.index = self.dense(flat.view(weight.shape), module, fill=-1)
        self.n_out, self.n_in = self.kernel.shape[:2]
        connected = (self.index[..., 0] >= 0).double()
        norms = self.kernel.sum(-1)
        self.fwd_cdf = self._rows(norms.t(), connected.t()).cumsum(1)
        self.bwd_cdf = self._rows(norms, connected).cumsum(1)
        empty = self.kernel.sum(-1, keepdim=True) == 0
        self.kernel_cdf = torch.where(empty, torch.ones_like(self.kernel),
                                      self.kernel).double().cumsum(-1)
        del self.kernel

    @staticmethod
    def _rows(weights: Tensor, connected: Tensor) -> Tensor:
        return torch.where(weights.sum(1, keepdim=True) > 0, weights,
                           connected)

    @staticmethod
    def dense(t: Tensor, module: Optional[nn.Module], fill: float = 0
              ) -> Tensor:
        """``t`` (shaped like the weight) as ``[n_out, n_in, K]``, with
        ``fill`` between units of different groups."""
        groups, transposed = 1, False
        if isinstance(module, _ConvNd):
            groups, transposed = module.groups, module.transposed
        t = t.reshape(t.shape[0], t.shape[1] if t.dim() > 1 else 1, -1)
        if transposed:  # [in, out / groups, K]
            in_local, out_local = t.shape[0] // groups, t.shape[1]
            t = t.view(groups, in_local, out_local, -1).transpose(1, 2)
        else:  # [out, in / groups, K]
            out_local, in_local = t.shape[0] // groups, t.shape[1]
            t = t.view(groups, out_local, in_local, -1)
        if groups == 1:
            return t[0].contiguous()
        dense = t.new_full((groups * out_local, groups * in_local,
                            t.shape[-1]), fill)
        for g in range(groups):
            dense[g * out_local:(g + 1) * out_local,
                  g * in_local:(g + 1) * in_local] = t[g]
        return dense

    def step(self, units: Tensor, forward: bool,
             generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """One step of every walk entering at ``units``.

        Returns:
            tuple[Tensor, Tensor]: The units left by (output units going
            forward, input units going backward) and the flat indices of the
            kernel entries enabled.
        """
        table = self.fwd_cdf if forward else self.bwd_cdf
        nxt = _sample(table[units], generator)
        out, inp = (nxt, units) if forward else (units, nxt)
        if self.kernel_cdf.shape[-1] == 1:
            entry = torch.zeros_like(out)
        else:
            entry = _sample(self.kernel_cdf[out, inp], generator)
        return nxt, self.index[out, inp, entry]


def _sample(cdf: Tensor, generator: torch.Generator) -> Tensor:
    """One index per row, with probability proportional to the row's
    increments (inverse-CDF sampling: the same distribution as
    :func:`torch.multinomial`, several times faster on CPU)."""
    u = torch.rand(cdf.shape[0], 1, generator=generator,
                   device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True)[:, 0]
    return index.clamp_(max=cdf.shape[1] - 1)


def _map_units(units: Tensor, n_from: int, n_to: int,
               generator: torch.Generator) -> Tensor:
    """Units of one layer as units of the adjacent one (see the module
    docstring)."""
    if n_from == n_to:
        return units
    if n_to % n_from == 0:
        factor = n_to // n_from
        return units * factor + torch.randint(
            factor, units.shape, generator=generator, device=units.device)
    if n_from % n_to == 0:
        return units // (n_from // n_to)
    return torch.randint(
        n_to, units.shape, generator=generator, device=units.device)


class _Walker:
    """Batches of PHEW walks over a layer graph."""

    def __init__(self, layers: Mapping[str, _Layer], graph: LayerGraph,
                 offsets: Mapping[str, int],
                 generator: torch.Generator) -> None:
        self.layers = layers
        self.order, self.succs, self.preds = graph
        self.offsets = offsets
        self.generator = generator
        sources = [n for n in self.order if not self.preds[n]]
        sinks = [n for n in self.order if not self.succs[n]]
        self.seeds = {
            True: (sources, [layers[n].n_in for n in sources]),
            False: (sinks, [layers[n].n_out for n in sinks]),
        }
        self.next_seed = {True: 0, False: 0}

    def _seed(self, count: int, forward: bool
              ) -> Dict[str, Tuple[Tensor, Tensor]]:
        """Round-robin seed units of ``count`` walks, per start layer."""
        names, sizes = self.seeds[forward]
        total = sum(sizes)
        device = self.generator.device
        seeds = (self.next_seed[forward] + torch.arange(
            count, device=device)) % total
        self.next_seed[forward] = (self.next_seed[forward] + count) % total
        ends = torch.tensor(sizes, device=device).cumsum(0)
        which = torch.bucketize(seeds, ends, right=True)
        starts = ends - torch.tensor(sizes, device=device)
        return {
            name: (which == i, seeds[which == i] - starts[i])
            for i, name in enumerate(names)
        }

    def walk(self, walk_ids: Tensor, forward: bool
             ) -> Tuple[List[Tensor], List[Tensor]]:
        """Walk ``walk_ids`` in one direction; the ``(walk id, global flat
        index)`` of every step."""
        pending: Dict[str, List[Tuple[Tensor, Tensor]]] = {
            name: [] for name in self.order}
        for name, (chosen, units) in self._seed(len(walk_ids),
                                                forward).items():
            pending[name].append((walk_ids[chosen], units))
        ids_out, steps_out = [], []
        nexts = self.succs if forward else self.preds
        for name in (self.order if forward else reversed(self.order)):
            if not pending[name]:
                continue
            ids = torch.cat([p[0] for p in pending[name]])
            units = torch.cat([p[1] for p in pending[name]])
            layer = self.layers[name]
            units, index = layer.step(units, forward, self.generator)
            ids_out.append(ids)
            steps_out.append(index + self.offsets[name])
            options = nexts[name]
            if not options:
                continue
            pick = torch.randint(len(options), ids.shape,
                                 generator=self.generator,
                                 device=ids.device)
            n_from = layer.n_out if forward else layer.n_in
            for i, other in enumerate(options):
                chosen = pick == i
                n_to = (self.layers[other].n_in
                        if forward else self.layers[other].n_out)
                pending[other].append(
                    (ids[chosen],
                     _map_units(units[chosen], n_from, n_to,
                                self.generator)))
        return ids_out, steps_out

    def batch(self, count: int) -> Tuple[Tensor, Tensor]:
        """``count`` walks, alternately forward and backward (forward
        first); ``(walk id, global flat index)`` of all their steps."""
        device = self.generator.device
        ids = torch.arange(count, device=device)
        fwd_ids, fwd_steps = self.walk(ids[0::2], True)
        bwd_ids, bwd_steps = self.walk(ids[1::2], False)
        return (torch.cat(fwd_ids + bwd_ids),
                torch.cat(fwd_steps + bwd_steps))


def _new_per_walk(walk: Tensor, index: Tensor, enabled: Tensor,
                  count: int) -> Tensor:
    """How many weights each walk of a batch enables first (in walk order,
    counting weights enabled before the batch as old)."""
    key = torch.unique(index * count + walk)  # sorted by index, then walk
    index, walk = key // count, key % count
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    new = first & ~enabled[index]
    return torch.bincount(walk[new], minlength=count)


def phew_scores(model: nn.Module,
                params: Mapping[str, Tensor],
                sparsity: float,
                batches: Optional[Iterable[Any]] = None,
                input_shape: Optional[Sequence[int]] = None,
                forward_fn: Optional[Callable[[nn.Module, Tensor],
                                              Any]] = None,
                generator: Optional[torch.Generator] = None,
                max_walks: int = 4096,
                progress: Optional[Callable[[str, float], None]] = None
                ) -> Dict[str, Tensor]:
    """PHEW scores (Patil & Dovrolis, 2021): walks through each weight.

    Walks alternate forward and backward (forward first, seeds round-robin)
    over the layer graph of :func:`trace_layer_graph` until at least
    ``round((1 - sparsity) * N)`` of the ``N`` weights are enabled; the
    walk that reaches the target is the last and is completed, as in the
    authors' ``phew_masks``. The score of a weight is the number of walks
    through it (0: never visited), so ``select_masks(scores, sparsity)``
    keeps the visited weights. The last walk may overshoot the target by
    fewer weights than it has steps; select_masks then drops that many of
    the weights visited once (among equal scores it keeps the first in
    order), which is negligible against the target.

    The walks run in batches of up to ``max_walks`` at once (sampling with
    :func:`torch.multinomial` from per-unit probability tables); the batch
    is cut after the walk that reaches the target, so the result is that of
    walking one at a time. Nothing of the model is modified.

    Args:
        model (nn.Module): The model.
        params (Mapping[str, Tensor]): Prunable weights by name.
        sparsity (float): Target sparsity: the walks stop at
            ``round((1 - sparsity) * N)`` enabled weights.
        batches (Iterable, optional): Only used to infer ``input_shape``
            (one sample of the first batch). Defaults to None.
        input_shape (Sequence[int], optional): Shape of the input the layer
            graph is traced with. Defaults to None (from ``batches``).
        forward_fn (Callable, optional): ``forward_fn(model, x)``, e.g.
            ``lambda m, x: m.backbone(x)``. Defaults to None (``model(x)``).
        generator (torch.Generator, optional): Source of randomness, on the
            weights' device. Defaults to None (a generator seeded with
            ``torch.initial_seed()``, the run's seed; the global RNG state
            is not used nor advanced).
        max_walks (int): Most walks sampled at once. Defaults to 4096.
        progress (Callable, optional): ``progress(message, fraction)`` after
            every batch of walks. Defaults to None.

    Returns:
        dict[str, Tensor]: Float32 visit counts shaped like each weight.
    """
    check_sparsity(sparsity)
    if input_shape is None:
        input_shape = tuple(first_sample(batches, 'phew').shape)
    device = next(iter(params.values())).device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(torch.initial_seed())
    graph = trace_layer_graph(model, params, input_shape, forward_fn)
    modules = dict(model.named_modules())
    layers = {
        name: _Layer(w, modules.get(name.rpartition('.')[0]))
        for name, w in params.items()
    }
    sizes = [w.numel() for w in params.values()]
    starts = [0] + torch.tensor(sizes).cumsum(0).tolist()[:-1]
    offsets = dict(zip(params, starts))
    total = sum(sizes)
    target = kept_count(sparsity, total)
    walker = _Walker(layers, graph, offsets, generator)
    visits = torch.zeros(total, device=device)
    enabled = torch.zeros(total, dtype=torch.bool, device=device)
    done, per_walk = 0, float(len(graph[0]))
    while done < target:
        count = int(min(max_walks, max(2, math.ceil(
            (target - done) / max(per_walk, 1e-3)))))
        walk, index = walker.batch(count)
        new = _new_per_walk(walk, index, enabled, count)
        reached = (done + new.cumsum(0) >= target).nonzero()
        last = int(reached[0]) if len(reached) else count - 1
        used = walk <= last
        visits.index_add_(0, index[used],
                          torch.ones_like(index[used], dtype=visits.dtype))
        enabled[index[used]] = True
        done += int(new[:last + 1].sum())
        per_walk = max(float(new[:last + 1].float().mean()), 1e-3)
        if progress is not None:
            progress(f'{done}/{target} weights enabled',
                     min(1.0, done / max(target, 1)))
    return {
        name: visits[start:start + size].view(w.shape)
        for (name, w), start, size in zip(params.items(), starts, sizes)
    }


@CRITERIA.register('phew')
class PHEW(Criterion):
    """PHEW (Patil & Dovrolis, ICML 2021): :func:`phew_scores`, data-free
    biased random walks that stop at the target sparsity. The layer graph
    is traced on a zero input of one sample's shape (``input_shape``, or
    taken from one batch). Weights only; stochastic, reproducible with
    ``seed``.

    Args:
        input_shape (Sequence[int], optional): ``(1, C, H, W)``. Defaults
            to None (from the first scoring batch).
        seed (int, optional): Seed of the walks' generator: the same seed
            gives the same scores. Defaults to None
            (``torch.initial_seed()``, the run's seed).
        max_walks (int): Most walks sampled at once (memory / speed; it
            changes the scores only as another seed would, by how the
            random stream is consumed). Defaults to 4096.
    """
    data = 'input'
    uses_sparsity = True

    def __init__(self,
                 input_shape: Optional[Sequence[int]] = None,
                 seed: Optional[int] = None,
                 max_walks: int = 4096) -> None:
        if seed is not None and (not isinstance(seed, int)
                                 or isinstance(seed, bool)):
            raise ValueError(f'seed must be an integer or None, got {seed!r}')
        if not isinstance(max_walks, int) or max_walks < 2:
            raise ValueError(
                f'max_walks must be an integer >= 2, got {max_walks!r}')
        self.input_shape = input_shape
        self.seed = seed
        self.max_walks = max_walks

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        if inputs.sparsity is None:
            raise ValueError(
                'phew walks until the target number of weights is enabled '
                'and needs the target `sparsity` (compute_scores(..., '
                'sparsity=0.9)); WeightPruner passes it')
        device = next(iter(params.values())).device
        generator = torch.Generator(device=device)
        generator.manual_seed(
            torch.initial_seed() if self.seed is None else self.seed)
        return phew_scores(inputs.model, params, inputs.sparsity,
                           inputs.batches, self.input_shape,
                           inputs.forward_fn, generator, self.max_walks,
                           inputs.progress)
