"""ProsPr: meta-gradient of the loss after a few training steps.

Two ways to compute the same meta-gradient:

* **adjoint sweep** (default, ``memory_efficient=True``): run the inner SGD
  steps without a graph, then walk back through them, rebuilding one step's
  graph at a time (its parameters replayed from the model's own, its
  forward recomputed) for a Hessian-vector product with the adjoint. Peak
  memory is about that of one training step plus one Hessian-vector
  product, whatever the number of steps; the price is the recomputation.
* **unrolled** (``memory_efficient=False``): differentiate through all
  inner steps at once (``create_graph=True``), the direct definition. Every
  step's graph stays alive until the end, so memory grows with
  ``num_steps``. It is the reference the adjoint sweep is tested against
  and is faster when memory is not the limit (tiny models).

``tools/benchmark.py --sections memory`` measures both against a training
step.
"""
import warnings
from functools import partial
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Set, Tuple)

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import (Progress, as_batch_list, call_with_tensors,
                          detached_leaves, preserved_state, scalar_loss)
from .base import CRITERIA, Criterion, ScoringInputs

LossFn = Callable[[nn.Module, Any], Tensor]

# A repeated loss_fn call sees the same parameters, batch and RNG state as
# the first: its loss may differ only by rounding (non-deterministic CUDA
# reductions), far below what a stale loss state changes.
REPEAT_RTOL = 1e-5
REPEAT_ATOL = 1e-7


def prospr_scores(model: nn.Module,
                  loss_fn: LossFn,
                  batches: Iterable[Any],
                  params: Mapping[str, Tensor],
                  num_steps: int = 3,
                  lr: float = 0.1,
                  momentum: float = 0.0,
                  first_order: bool = False,
                  memory_efficient: bool = True,
                  progress: Optional[Progress] = None) -> Dict[str, Tensor]:
    """ProsPr (prospect pruning) scores, the criterion of EPSD.

    The absolute value of :func:`prospr_meta_gradients`; see there.

    Args:
        model (nn.Module): The model, in the mode to score in.
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``.
        batches (Iterable): Batches passed to ``loss_fn``: fewer than
            ``num_steps + 1`` are cycled, otherwise their number must be a
            multiple of ``num_steps + 1`` (micro-batches per loss
            evaluation).
        params (Mapping[str, Tensor]): Prunable weights by name.
        num_steps (int): Inner SGD steps ``M``. Defaults to 3.
        lr (float): Inner learning rate. Defaults to 0.1.
        momentum (float): Inner SGD momentum. Defaults to 0.0.
        first_order (bool): Detach the inner gradients. Defaults to False.
        memory_efficient (bool): Adjoint sweep with recomputation (memory of
            about one step) rather than the unrolled graph. Defaults to True.
        progress (Callable, optional): ``progress(message, fraction)``
            after every ``loss_fn`` call. Defaults to None.

    Returns:
        dict[str, Tensor]: Non-negative scores, detached, one per weight.
    """
    grads = prospr_meta_gradients(model, loss_fn, batches, params,
                                  num_steps, lr, momentum, first_order,
                                  memory_efficient, progress)
    return {name: g.abs() for name, g in grads.items()}


def prospr_meta_gradients(model: nn.Module,
                          loss_fn: LossFn,
                          batches: Iterable[Any],
                          params: Mapping[str, Tensor],
                          num_steps: int = 3,
                          lr: float = 0.1,
                          momentum: float = 0.0,
                          first_order: bool = False,
                          memory_efficient: bool = True,
                          progress: Optional[Progress] = None
                          ) -> Dict[str, Tensor]:
    """Signed meta-gradient ``dL(w_M) / dm`` of element-wise masks.

    Masks ``m = 1`` multiply the masked parameters, ``w_0 = w * m``; then
    ``num_steps`` functional SGD steps update *all* trainable parameters of
    the model, ``w_{k+1} = w_k - lr * v_k`` with ``v_k = g_k + momentum *
    v_{k-1}`` and ``g_k = dL_k(w_k) / dw_k`` (a parameter the loss does not
    use is not stepped, as in ``torch.optim.SGD``). The result is the
    meta-gradient ``dL_M(w_M) / dm`` through all steps. With
    ``first_order=True`` the inner gradients are treated as constants (cheap
    variant, ``w * dL_M(w_M)/dw_M``). ``num_steps=0`` is SNIP's signed
    ``w * dL/dw``. ``params`` may hold any parameters (biases and norm
    weights too, frozen ones as well): channel criteria sum these
    element-wise meta-gradients over a channel's entries, since a channel
    mask is the mask of all of them.

    **Batches.** There are ``num_steps + 1`` loss evaluations ``L_0 ..
    L_M``. With fewer batches than that, evaluation ``k`` uses
    ``batches[k % len(batches)]``. With more, their number must be a
    multiple ``G * (num_steps + 1)``: evaluation ``k`` averages the loss
    over the micro-batches ``batches[k*G:(k+1)*G]``, processed one at a
    time, so a scoring batch ``G`` times the training batch needs the memory
    of one training batch (gradient accumulation). For a model whose output
    for a sample does not depend on the rest of its batch this equals
    scoring on the concatenated batch; train-mode BatchNorm normalises each
    micro-batch with its own statistics, as in gradient accumulation. The
    activations are those of one micro-batch; without momentum, ``G > 1``
    holds one more parameter-sized buffer (with momentum the velocity's
    adjoint is that buffer anyway).

    **Memory.** By default (``memory_efficient=True``) the steps run without
    a graph; the meta-gradient is then accumulated backwards, step by step,
    by Hessian-vector products on each step's recomputed graph. The steps'
    parameters are not stored (only those before the last step): the
    parameters of step ``k`` are rebuilt by replaying steps ``0 .. k-1``.
    ``loss_fn`` is therefore called again for the same micro-batches
    (``2M + 1 + (M-1)(M-2)/2`` evaluations instead of ``M + 1``), and every
    repeated call must see what the first one saw:

    * the random number generator (dropout, drop-path): its CPU and CUDA
      states are saved before every call and restored for the repeats;
    * the state of a stateful ``loss_fn`` (e.g. DLB's soft targets, the
      previous call's detached predictions): if ``loss_fn`` has methods
      ``get_state()`` and ``set_state(state)``, ``get_state()`` is saved
      before every call of the first sweep and restored with ``set_state``
      before that call is repeated. ``get_state()`` must return a snapshot
      that later calls do not modify. A stateful ``loss_fn`` without these
      methods is refused: each repeated call's loss is compared with the
      first call's (relative tolerance ``1e-5``) and a difference raises a
      ``ValueError`` naming the step.
      Afterwards the state (and the RNG) are left as after the first
      sweep's last call, as with ``memory_efficient=False``;
    * buffers are not restored between the calls: train-mode BatchNorm
      normalises with batch statistics, so its running-stat updates do not
      change the repeated outputs (all buffers are restored on exit).

    On CUDA, kernels with non-deterministic reductions make the repeats
    differ from the first sweep at rounding level, as any recomputation.
    ``memory_efficient=False`` differentiates through the unrolled steps
    instead (every step's graph alive at once: memory grows with
    ``num_steps``); it calls ``loss_fn`` once per micro-batch and is the
    reference the default is tested against.

    The model is run through :func:`torch.func.functional_call`, so its
    parameters, ``.grad`` and (restored) buffers and modes are unchanged
    afterwards. ``loss_fn`` is first called once per micro-batch of each
    evaluation, in order, so a stateful ``loss_fn`` sees the outputs of the
    previous inner step.

    Args:
        model (nn.Module): The model, in the mode to score in (usually
            train).
        loss_fn (Callable): ``loss_fn(model, batch) -> scalar tensor``. It
            may call any method of ``model``; all of them see the stepped
            parameters. Optionally stateful, see above.
        batches (Iterable): Batches passed to ``loss_fn``; see above.
        params (Mapping[str, Tensor]): Masked parameters by name, e.g.
            from :func:`~epsd_mm.pruning.prunable_parameters`.
        num_steps (int): Inner SGD steps ``M``. Defaults to 3.
        lr (float): Inner learning rate. Defaults to 0.1.
        momentum (float): Inner SGD momentum. Defaults to 0.0.
        first_order (bool): Detach the inner gradients. Defaults to False.
        memory_efficient (bool): Adjoint sweep with recomputation rather
            than the unrolled graph. Defaults to True.
        progress (Callable, optional): ``progress(message, fraction)``
            after every ``loss_fn`` call (see :func:`num_loss_calls` for
            their number). Defaults to None.

    Returns:
        dict[str, Tensor]: Signed ``dL/dm``, detached, shaped like each
        parameter (zeros where the loss does not depend on it).
    """
    if num_steps < 0:
        raise ValueError(f'num_steps must be >= 0, got {num_steps}')
    groups = evaluation_groups(as_batch_list(batches), num_steps)
    named = dict(model.named_parameters())
    unknown = [name for name in params if name not in named]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} are not parameter names of "
                         f'{type(model).__name__}; take `params` from '
                         'prunable_parameters(model)')
    _check_state_methods(loss_fn)
    sweep = _InnerSteps(model, loss_fn, groups, list(params), lr, momentum,
                        progress)
    sweep.total_calls = num_loss_calls(
        len(groups[0]), num_steps, first_order, memory_efficient)
    with preserved_state(model):
        if memory_efficient:
            adjoints = sweep.adjoints(first_order)
        else:
            adjoints = sweep.unrolled_adjoints(first_order)
    return {
        name: (torch.zeros_like(named[name]) if adjoints.get(name) is None
               else named[name].detach() * adjoints[name])
        for name in params
    }


def evaluation_groups(batches: List[Any], num_steps: int) -> List[List[Any]]:
    """Split scoring batches over the ``num_steps + 1`` loss evaluations.

    Args:
        batches (list): The scoring batches (non-empty).
        num_steps (int): Inner SGD steps ``M``.

    Returns:
        list[list]: ``num_steps + 1`` groups of micro-batches, evaluation
        ``k`` averaging its loss over group ``k``.
    """
    evaluations = num_steps + 1
    if len(batches) <= evaluations:
        return [[batches[k % len(batches)]] for k in range(evaluations)]
    surplus = len(batches) % evaluations
    if surplus:
        fewer = len(batches) - surplus
        raise ValueError(
            f'{len(batches)} scoring batches do not split evenly over the '
            f'{evaluations} loss evaluations of num_steps={num_steps} '
            f'({surplus} surplus): pass a multiple of {evaluations} (e.g. '
            f'{fewer} or {fewer + evaluations}) to average each evaluation '
            f'over that many micro-batches, or at most {evaluations} '
            'batches (one per evaluation, cycled if fewer)')
    size = len(batches) // evaluations
    return [batches[k * size:(k + 1) * size] for k in range(evaluations)]


def num_loss_calls(group_size: int, num_steps: int, first_order: bool,
                   memory_efficient: bool) -> int:
    """How many times ProsPr calls ``loss_fn``.

    Args:
        group_size (int): Micro-batches per loss evaluation ``G``.
        num_steps (int): Inner SGD steps ``M``.
        first_order (bool): Inner gradients treated as constants.
        memory_efficient (bool): Adjoint sweep with recomputation.

    Returns:
        int: ``G (M + 1)`` for one sweep (first-order or unrolled), ``G (2M
        + 1 + (M - 1)(M - 2) / 2)`` for the adjoint sweep (first sweep, the
        replays of steps ``0 .. k-1`` for ``k <= M - 2``, one recomputed
        step per reversed step); an upper bound when a reversed step has
        nothing to carry back.
    """
    if first_order or not memory_efficient or num_steps == 0:
        return group_size * (num_steps + 1)
    replays = (num_steps - 1) * (num_steps - 2) // 2
    return group_size * (2 * num_steps + 1 + replays)


def _check_state_methods(loss_fn: LossFn) -> None:
    has = [hasattr(loss_fn, m) for m in ('get_state', 'set_state')]
    if any(has) and not all(has):
        raise TypeError(
            f'loss_fn has only one of get_state/set_state; a stateful '
            f'loss_fn needs both (got {type(loss_fn).__name__}) so that '
            'ProsPr can replay its state when recomputing an inner step')


class _CallState:
    """What a ``loss_fn`` call depends on besides the parameters: the RNG
    states (CPU, and CUDA when initialised) and the loss's own state."""

    def __init__(self, loss_fn: LossFn) -> None:
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_initialized() else None)
        self.loss_state = (
            loss_fn.get_state() if hasattr(loss_fn, 'get_state') else None)

    def restore(self, loss_fn: LossFn) -> None:
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if hasattr(loss_fn, 'set_state'):
            loss_fn.set_state(self.loss_state)


class _InnerSteps:
    """The inner SGD steps of ProsPr and their adjoint (reverse) sweep.

    Notation: ``theta`` are the trainable parameters (stepped), ``frozen``
    the masked parameters that do not require grad (constant through the
    steps, but the steps and losses depend on them). The adjoint of a
    tensor is the derivative of the final loss ``L_M`` with respect to it.

    Memory is what one training step with a Hessian-vector product needs:
    besides the adjoint, at most two sets of parameters are held. The first
    sweep keeps only ``theta_{M-1}`` (the first step to reverse); the
    reverse sweep rebuilds the parameters of an earlier step ``k`` by
    replaying steps ``0 .. k-1`` from the model's own weights into one copy
    updated in place (the first sweep records each call's RNG and loss
    state, so the replay repeats it exactly).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn,
                 groups: List[List[Any]], masked: List[str], lr: float,
                 momentum: float,
                 progress: Optional[Progress] = None) -> None:
        self.model = model
        self.progress = progress
        self.calls_done = 0
        self.total_calls = 0  # set by the caller, for progress fractions
        self.loss_fn = loss_fn
        self.groups = groups
        self.lr = lr
        self.momentum = momentum
        named = dict(model.named_parameters())
        self.theta = {
            n: p.detach()
            for n, p in named.items() if p.requires_grad
        }
        self.frozen = {
            n: named[n].detach()
            for n in masked if not named[n].requires_grad
        }
        # Recorded by the first sweep: per step, the state before each
        # loss_fn call and the parameters the step did not use.
        self.calls: List[List[_CallState]] = []
        self.skipped: List[Set[str]] = []
        # The loss of each call of the first sweep, per step: the repeats
        # must give the same value.
        self.first_losses: List[List[Tensor]] = []

    # -- forward ---------------------------------------------------------
    def _loss(self,
              tensors: Mapping[str, Tensor],
              batch: Any,
              group_size: int,
              where: str,
              call: Optional[Tuple[int, int, bool]] = None) -> Tensor:
        """The loss of one micro-batch, scaled for its group; reports
        progress as ``'<where>, batch i/G (loss evaluation n/total)'``.

        Args:
            tensors (Mapping[str, Tensor]): Parameters to run the model
                with.
            batch (Any): The micro-batch.
            group_size (int): Micro-batches of this loss evaluation.
            where (str): The call's place, for the progress report.
            call (tuple, optional): ``(step, index, repeat)`` of an inner
                step's call: the first sweep's (``repeat=False``) loss is
                recorded, a repeat's is checked against it. Defaults to
                None (the final loss, never repeated).

        Returns:
            Tensor: The scalar loss divided by ``group_size``.
        """
        loss = scalar_loss(
            call_with_tensors(self.model, tensors, self.loss_fn, batch))
        self.calls_done += 1
        if self.progress is not None:
            total = max(self.total_calls, self.calls_done)
            index = (self.calls_done - 1) % group_size + 1
            self.progress(
                f'{where}, batch {index}/{group_size} (loss evaluation '
                f'{self.calls_done}/{total})', self.calls_done / total)
        if call is not None:
            step, index, repeat = call
            if repeat:
                self._check_repeat(step, index, loss.detach())
            else:
                if index == 0:
                    self.first_losses.append([])
                self.first_losses[step].append(loss.detach())
        return loss / group_size

    def _check_repeat(self, step: int, index: int, loss: Tensor) -> None:
        """Refuse a repeated call whose loss differs from the first's.

        Args:
            step (int): The inner step (0-based).
            index (int): The micro-batch within the step's group.
            loss (Tensor): The repeated call's (unscaled) loss.

        Raises:
            ValueError: The loss differs beyond rounding: ``loss_fn`` keeps
                state that ProsPr cannot replay.
        """
        first = self.first_losses[step][index]
        if torch.allclose(
                loss, first, rtol=REPEAT_RTOL, atol=REPEAT_ATOL,
                equal_nan=True):
            return
        group_size = len(self.groups[step])
        batch = (f', micro-batch {index + 1}/{group_size}'
                 if group_size > 1 else '')
        raise ValueError(
            f'loss_fn gave {loss.item():.8g} when ProsPr recomputed inner '
            f'step {step + 1}/{len(self.groups) - 1}{batch} but '
            f'{first.item():.8g} the first time, with the same parameters, '
            'batch and RNG state: it keeps state between calls (e.g. the '
            'previous predictions in a closure), which the default '
            'adjoint sweep (memory_efficient=True) cannot replay, so its '
            'scores would be wrong. Give loss_fn methods get_state() and '
            'set_state(state) (ProsPr saves the state before each call and '
            'restores it before the repeat) or score with '
            'memory_efficient=False (one call per step, memory grows with '
            'num_steps)')

    def run_steps(self, count: int, replay: bool, keep_last: bool = False
                  ) -> Tuple[Dict[str, Tensor], Optional[Dict[str, Tensor]]]:
        """The parameters after ``count`` SGD steps from the model's own.

        Args:
            count (int): Steps to take.
            replay (bool): Restore the states recorded by the first sweep
                before each call; otherwise (first sweep) record them and
                the unused parameters.
            keep_last (bool): Also return the parameters before the last
                step (the last step then writes a new copy). Defaults to
                False.

        Returns:
            tuple[dict, dict | None]: The trainable parameters after the
            steps and, with ``keep_last``, before the last one.
        """
        theta, previous, velocity = self.theta, None, {}
        owned: Set[str] = set()  # names whose tensor is ours, not the model's
        for k in range(count):
            leaves = detached_leaves(theta)
            if not replay:
                self.calls.append([])
            for i, batch in enumerate(self.groups[k]):
                if replay:
                    self.calls[k][i].restore(self.loss_fn)
                else:
                    self.calls[k].append(_CallState(self.loss_fn))
                loss = self._loss(
                    leaves, batch, len(self.groups[k]),
                    f"{'replay' if replay else 'inner'} step "
                    f'{k + 1}/{len(self.groups) - 1}', (k, i, replay))
                _accumulate(loss, list(leaves.values()))
            grads = {name: leaf.grad for name, leaf in leaves.items()}
            del leaves, loss
            if not replay:
                self.skipped.append(
                    {name for name, g in grads.items() if g is None})
            if keep_last and k == count - 1:
                previous, owned = theta, set()
            theta = self._sgd_step(theta, grads, velocity, owned)
            del grads
        return theta, previous

    def _sgd_step(self, theta: Dict[str, Tensor],
                  grads: Dict[str, Optional[Tensor]],
                  velocity: Dict[str, Tensor],
                  owned: Set[str]) -> Dict[str, Tensor]:
        """``theta - lr * v``, in place on the tensors in ``owned``;
        unused parameters (gradient None) are not stepped."""
        new = dict(theta)
        for name, grad in grads.items():
            if grad is None:
                continue
            if self.momentum:
                if name in velocity:
                    grad = velocity[name].mul_(self.momentum).add_(grad)
                velocity[name] = grad
            if name in owned:
                new[name].sub_(self.lr * grad)
            else:
                new[name] = theta[name] - self.lr * grad
                owned.add(name)
        return new

    # -- adjoint sweep (default) -----------------------------------------
    def adjoints(self, first_order: bool) -> Dict[str, Optional[Tensor]]:
        """Adjoints of the initial parameters, by the adjoint sweep.

        Args:
            first_order (bool): Stop after the final loss: the adjoints of
                the final parameters (inner gradients constant).

        Returns:
            dict[str, Tensor | None]: Adjoint per name (None if unused).
        """
        num_steps = len(self.groups) - 1
        # theta_{M-1} is kept: the first step to reverse needs it and
        # replaying it would cost M-1 steps; the rest are replayed.
        theta, last = self.run_steps(
            num_steps, replay=False, keep_last=not first_order)
        leaves = detached_leaves(theta)
        frozen = detached_leaves(self.frozen)
        del theta
        group = self.groups[num_steps]
        for batch in group:
            loss = self._loss({**leaves, **frozen}, batch, len(group),
                              'final loss')
            _accumulate(loss, list(leaves.values()) + list(frozen.values()))
        del loss
        alpha = {name: leaf.grad for name, leaf in leaves.items()}
        del leaves
        if not first_order:
            end = _CallState(self.loss_fn)
            velocity_adjoint: Dict[str, Tensor] = {}
            for k in reversed(range(num_steps)):
                if last is None:
                    theta = self.run_steps(k, replay=True)[0]
                else:
                    theta, last = last, None
                self._reverse_step(theta, k, alpha, velocity_adjoint, frozen)
                del theta
            end.restore(self.loss_fn)
        alpha.update({name: leaf.grad for name, leaf in frozen.items()})
        return alpha

    def _reverse_step(self, theta: Dict[str, Tensor], k: int,
                      alpha: Dict[str, Optional[Tensor]],
                      velocity_adjoint: Dict[str, Tensor],
                      frozen: Dict[str, Tensor]) -> None:
        """Carry the adjoints from after step ``k`` to before it, in place.

        Step ``k`` maps ``(theta, v)`` to ``v' = g(theta) + momentum * v``,
        ``theta' = theta - lr * v'``. With ``alpha`` the adjoint of
        ``theta'`` and ``b`` that of ``v'`` (including its use in
        ``theta'``), ``b = momentum * b_{k+1} - lr * alpha``; the adjoint of
        ``theta`` is ``alpha + H b`` (``H`` the Hessian of ``L_k``) and the
        frozen parameters gain ``H_frozen,theta b`` (mixed second
        derivatives). Without momentum ``b = -lr * alpha`` needs no buffer
        of its own.

        ``H b`` comes from differentiating the directional derivative
        ``<g, b>`` of step ``k``'s recomputed loss: each gradient ``g_i`` is
        folded into ``<g_i, b_i>`` as soon as autograd has accumulated it,
        so the full gradient is never held, and the second backward adds
        ``H b`` straight into ``alpha`` (and the frozen adjoints) as the
        leaves' ``.grad``. When ``b`` is ``alpha`` itself, autograd's saved
        tensor version check guarantees that ``alpha`` is read before it is
        updated.
        """
        group = self.groups[k]
        if self.momentum:
            b = velocity_adjoint
            for name in theta:
                if name in self.skipped[k]:
                    continue  # v' = v: its adjoint passes through
                if name in b:
                    b[name].mul_(self.momentum)
                    if alpha[name] is not None:
                        b[name].sub_(self.lr * alpha[name])
                elif alpha[name] is not None:
                    b[name] = -self.lr * alpha[name]
            direction, scale = b, 1.0
        else:
            direction, scale = alpha, -self.lr
            if len(group) > 1:  # alpha is updated between micro-batches
                direction = {
                    n: a.clone()
                    for n, a in alpha.items() if a is not None
                }
        stepped = [
            n for n in theta
            if n not in self.skipped[k] and direction.get(n) is not None
        ]
        if not stepped:  # nothing flows back through this step
            return
        leaves = detached_leaves(theta)
        del theta
        inputs = list(leaves.values()) + list(frozen.values())
        for i, (call, batch) in enumerate(zip(self.calls[k], group)):
            call.restore(self.loss_fn)
            products: List[Tensor] = []

            def fold(leaf: Tensor, d: Tensor) -> None:
                products.append((leaf.grad * d).sum())
                leaf.grad = None

            handles = [
                leaves[n].register_post_accumulate_grad_hook(
                    partial(fold, d=direction[n])) for n in stepped
            ]
            loss = self._loss({**leaves, **frozen}, batch, len(group),
                              f'back through step {k + 1}/'
                              f'{len(self.groups) - 1}', (k, i, True))
            with warnings.catch_warnings():
                # the leaf-gradient reference cycle it warns about is
                # broken by `fold`, which resets each .grad at once
                warnings.filterwarnings(
                    'ignore', 'Using backward.. with create_graph=True')
                torch.autograd.backward(
                    loss,
                    inputs=[leaves[n] for n in stepped],
                    create_graph=True)
            del loss
            for handle in handles:
                handle.remove()
            directional = sum(p for p in products if p.requires_grad)
            del products
            if isinstance(directional, Tensor):
                for name, leaf in leaves.items():
                    leaf.grad = alpha[name]
                torch.autograd.backward(directional * scale, inputs=inputs)
                del directional
                for name, leaf in leaves.items():
                    alpha[name], leaf.grad = leaf.grad, None

    # -- unrolled graph (reference) ------------------------------------
    def unrolled_adjoints(self,
                          first_order: bool) -> Dict[str, Optional[Tensor]]:
        """Adjoints of the initial parameters by differentiating through
        the unrolled steps (every step's graph alive at once).

        Args:
            first_order (bool): Treat the inner gradients as constants.

        Returns:
            dict[str, Tensor | None]: Adjoint per name (None if unused).
        """
        start = {
            **detached_leaves(self.theta),
            **detached_leaves(self.frozen)
        }
        fast = dict(start)
        trainable = list(self.theta)
        velocity: Dict[str, Tensor] = {}
        for k, group in enumerate(self.groups[:-1]):
            where = f'inner step {k + 1}/{len(self.groups) - 1}'
            loss = sum(
                self._loss(fast, batch, len(group), where) for batch in group)
            grads = torch.autograd.grad(
                loss, [fast[n] for n in trainable],
                create_graph=not first_order,
                allow_unused=True)
            for name, grad in zip(trainable, grads):
                if grad is None:
                    continue
                if self.momentum:
                    if name in velocity:
                        grad = self.momentum * velocity[name] + grad
                    velocity[name] = grad
                fast[name] = fast[name] - self.lr * grad
        group = self.groups[-1]
        loss = sum(
            self._loss(fast, batch, len(group), 'final loss')
            for batch in group)
        grads = torch.autograd.grad(
            loss, list(start.values()), allow_unused=True)
        return dict(zip(start, grads))


def _accumulate(loss: Tensor, inputs: List[Tensor]) -> None:
    """Add ``d loss / d input`` to each input's ``.grad``."""
    if inputs:
        torch.autograd.backward(loss, inputs=inputs)



@CRITERIA.register('prospr')
class ProsPr(Criterion):
    """ProsPr (prospect pruning), the criterion of EPSD: ``|dL(w_M)/dm|``
    after ``num_steps`` SGD steps on the scoring loss.

    Weights: :func:`prospr_scores`. Channels: the meta-gradient of a
    channel's mask, the sum of the element-wise meta-gradients over the
    channel's entries (:meth:`~epsd_mm.pruning.ChannelGraph.channel_sums`),
    in absolute value.

    Args:
        num_steps (int): Inner SGD steps ``M``. Defaults to 3.
        lr (float): Inner learning rate. Defaults to 0.1.
        momentum (float): Inner SGD momentum. Defaults to 0.0.
        first_order (bool): Detach the inner gradients. Defaults to False.
        memory_efficient (bool): Adjoint sweep with recomputation rather
            than the unrolled graph. Defaults to True.
    """

    def __init__(self,
                 num_steps: int = 3,
                 lr: float = 0.1,
                 momentum: float = 0.0,
                 first_order: bool = False,
                 memory_efficient: bool = True) -> None:
        if not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(
                f'num_steps must be an integer >= 0, got {num_steps!r}')
        self.num_steps = num_steps
        self.lr = lr
        self.momentum = momentum
        self.first_order = first_order
        self.memory_efficient = memory_efficient

    def batches_needed(self, num_batches: int) -> int:
        num_batches = super().batches_needed(num_batches)
        evaluation_groups(list(range(num_batches)), self.num_steps)
        return num_batches

    def _meta_gradients(self, model: nn.Module, params: Mapping[str, Tensor],
                        inputs: ScoringInputs) -> Dict[str, Tensor]:
        self.check_inputs(inputs)
        return prospr_meta_gradients(
            model, inputs.loss_fn, inputs.batches, params, self.num_steps,
            self.lr, self.momentum, self.first_order, self.memory_efficient,
            inputs.progress)

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        grads = self._meta_gradients(inputs.model, params, inputs)
        return {name: g.abs() for name, g in grads.items()}

    def channel_scores(self, graph, inputs: ScoringInputs) -> Dict[str, Tensor]:
        grads = self._meta_gradients(graph.model, graph.parameters(), inputs)
        return {
            name: g.abs()
            for name, g in graph.channel_sums(grads).items()
        }
