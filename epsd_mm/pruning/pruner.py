"""One pruning engine: weight masks or removed channels, one interface.

A pruner checks its arguments when it is built, says how many batches it
needs per round (:attr:`Pruner.num_batches`), and prunes a model given a
loss and batches, optionally with ``reduce``/``broadcast`` callables for
distributed runs (every rank scores its own batches, the scores are
averaged, rank 0's choice is broadcast), returning a
:class:`PruningReport`. EPSD-It is a property of the pruner: with
``rounds=R`` the target is reached in R rounds, round ``r`` keeping
``(1 - sparsity) ** (r / R)`` of the dense network::

    pruner = WeightPruner(sparsity=0.9, criterion='prospr', scopes='features')
    report = pruner.prune(model, loss_fn, batches)   # all rounds
    print(report.summary())

:class:`WeightPruner` stores keep-masks on the model (see :mod:`.masks`);
:class:`ChannelPruner` removes output channels (see :mod:`.slimming`),
which replaces parameters: re-bind optimizers afterwards.
"""
import time
from dataclasses import dataclass, field
from typing import (Any, Callable, ClassVar, Dict, Iterable, List, Mapping,
                    Optional, Union)

import torch
from torch import Tensor, nn

from .channel_selection import check_round_to, select_channels
from .channels import ChannelGraph
from .criteria import build_criterion, check_scores_channels
from .criteria.base import Criterion, ScoringInputs
from .functional import Progress, first_sample
from .masks import apply_masks, get_masks
from .params import Scopes, normalize_scopes, prunable_parameters
from .record import to_plain
from .score_cache import ScoreCache, rng_state
from .selection import (check_floors_fit, check_selection, check_sparsity,
                        max_sparsity_with_one_each, select_masks, tied_kept)
from .slimming import format_slim_table, get_slim_spec, slim_channels
from .stats import format_sparsity_table, sparsity_stats

#: ``reduce(tensor)``: average a tensor over ranks, in place.
Reduce = Callable[[Tensor], Any]
#: ``broadcast(tensor)``: copy rank 0's tensor to every rank, in place.
Broadcast = Callable[[Tensor], Any]
LossFn = Callable[[nn.Module, Any], Tensor]
ForwardFn = Callable[[nn.Module, Any], Any]
#: Batches for every round, or ``batches(round) -> batches``.
Batches = Union[Iterable[Any], Callable[[int], Iterable[Any]], None]
#: Share of the kept units chosen by tie order above which a round warns.
TIED_SHARE = 0.01


@dataclass
class PruningReport:
    """What one pruning round did.

    Attributes:
        granularity (str): ``'weight'`` or ``'channel'``.
        round (int): The round (1-based).
        rounds (int): Rounds in total.
        criterion (str): The criterion's name.
        target (float): Target sparsity after this round (of the prunable
            weights, or of the channels in scope).
        sparsity (float): The sparsity reached.
        kept (int): Weights (or channels in scope) kept.
        total (int): Prunable weights (or dense channels in scope).
        num_batches (int): Batches scored on.
        seconds (float): Time taken.
        table (str): Per-layer result (sparsity per weight, or channels per
            changed layer).
        zero_score_layers (list[str]): Layers or groups that scored exactly
            0 everywhere (their masks follow tie order, not merit).
        tied_kept (int): Kept weights that tie order chose over pruned ones
            of equal score (see :func:`~epsd_mm.pruning.selection.tied_kept`).
        round_to (int): The channel multiple each group was rounded to
            (1: none).
        replaced_parameters (bool): Whether parameters were replaced
            (optimizers and DDP wrappers must be re-bound).
        cached (bool): Whether the scores came from a score cache.
    """
    granularity: str
    round: int
    rounds: int
    criterion: str
    target: float
    sparsity: float
    kept: int
    total: int
    num_batches: int
    seconds: float
    table: str
    zero_score_layers: List[str] = field(default_factory=list)
    tied_kept: int = 0
    round_to: int = 1
    replaced_parameters: bool = False
    cached: bool = False

    def summary(self) -> str:
        """One line: round, criterion, sparsity reached, time."""
        where = f'round {self.round}/{self.rounds}: ' if self.rounds > 1 \
            else ''
        source = 'cached scores' if self.cached else (
            f'{self.num_batches} batches' if self.num_batches else 'no data')
        return (f'{where}{self.granularity} sparsity {self.sparsity:.4f} '
                f'(target {self.target:.4f}): {self.kept:,} of '
                f'{self.total:,} {self.granularity}s kept, by '
                f'{self.criterion} on {source} in {self.seconds:.1f}s')

    def warnings(self) -> List[str]:
        """What the caller should tell the user about this round."""
        messages = []
        dead = self.zero_score_layers
        if dead:
            messages.append(
                f'{len(dead)} layers score exactly 0 under {self.criterion}, '
                f'so their selection follows tie order: {", ".join(dead[:6])}'
                f'{" ..." if len(dead) > 6 else ""}. A common cause is '
                'zero-initialised residual BN layers at random init: set '
                "backbone.zero_init_residual=False, or use "
                "criterion='prospr', whose inner steps revive them.")
        # a handful of equal scores is chance; a share of the mask is not
        if self.tied_kept > max(1, TIED_SHARE * self.kept):
            messages.append(
                f'{self.tied_kept:,} of the {self.kept:,} kept '
                f'{self.granularity}s ({self.tied_kept / self.kept:.1%}) '
                f'were chosen by position, not by {self.criterion}: their '
                'scores equal those of pruned ones at the keep boundary '
                '(e.g. weights no PHEW walk visited, or scores of 0). '
                'Layer-wise quotas and min_density floors fill up with '
                "them: prefer selection='global' and min_density=0 for "
                'this criterion, or a criterion that ranks every weight.')
        if self.round_to > 1 and abs(self.sparsity - self.target) > 0.005:
            messages.append(
                f'channel sparsity {self.sparsity:.4f}, not the target '
                f'{self.target:.4f}: round_to={self.round_to} keeps whole '
                f'blocks of {self.round_to} channels per group. '
                "selection='global' places the budget to within a block; a "
                'smaller round_to or another sparsity comes closer.')
        return messages


class Pruner:
    """Base of :class:`WeightPruner` and :class:`ChannelPruner`.

    Args:
        sparsity (float): Target sparsity after the last round, in
            ``[0, 1)``. Defaults to 0.9.
        criterion (str | dict | Criterion): A criterion of
            :data:`~epsd_mm.pruning.CRITERIA`, e.g. ``'prospr'`` or
            ``dict(type='ProsPr', num_steps=3)``. Defaults to ``'prospr'``.
        scopes (str | Sequence[str]): Module names or globs to prune.
            Defaults to ``('backbone',)``.
        selection (str): ``'global'`` or ``'layerwise'`` top-k. Defaults
            to ``'global'``.
        min_density (float): Per-layer floor of kept entries; 0 makes a
            collapsed layer an error. Defaults to 0.
        rounds (int): Rounds to reach ``sparsity`` (EPSD-It for more than
            one). Defaults to 1.
        num_batches (int): Batches scored on per round, for data criteria.
            Defaults to 4.
        round_to (int): Channel pruning only: every channel group keeps a
            multiple of this many channels (see
            :func:`~epsd_mm.pruning.select_channels`). Defaults to 1.
    """

    granularity: ClassVar[str] = ''
    #: Whether pruning replaces ``nn.Parameter`` objects.
    replaces_parameters: ClassVar[bool] = False
    #: Whether rounds may run between training iterations (after the
    #: optimizer holds state).
    prunes_during_training: ClassVar[bool] = True

    def __init__(self,
                 sparsity: float = 0.9,
                 criterion: Union[str, Mapping[str, Any],
                                  Criterion] = 'prospr',
                 scopes: Scopes = ('backbone', ),
                 selection: str = 'global',
                 min_density: float = 0.0,
                 rounds: int = 1,
                 num_batches: int = 4,
                 round_to: int = 1) -> None:
        check_selection(sparsity, selection, min_density)
        self.round_to = check_round_to(round_to)
        if isinstance(rounds, bool) or not isinstance(rounds,
                                                      int) or rounds < 1:
            raise ValueError(
                f'rounds must be a positive integer, got {rounds!r}')
        if isinstance(num_batches, bool) or not isinstance(num_batches, int):
            raise ValueError(
                f'num_batches must be an integer, got {num_batches!r}')
        self.sparsity = float(sparsity)
        self.criterion = build_criterion(criterion)
        self.scopes = normalize_scopes(scopes)
        self.selection = selection
        self.min_density = float(min_density)
        self.rounds = rounds
        try:
            self._batches = self.criterion.batches_needed(num_batches)
        except ValueError as error:
            raise ValueError(f'num_batches={num_batches}: {error}') from None
        self.rounds_done = 0

    @property
    def num_batches(self) -> int:
        """int: Batches to draw for one round (0: no data)."""
        return self._batches

    @property
    def done(self) -> bool:
        """bool: Whether every round has run."""
        return self.rounds_done >= self.rounds

    def round_sparsity(self, round_: int) -> float:
        """Target sparsity after round ``round_`` (1-based)."""
        if round_ == self.rounds:
            return self.sparsity
        return 1.0 - (1.0 - self.sparsity)**(round_ / self.rounds)

    def check_round_interval(self, iterations: int) -> None:
        """Check an interval of training iterations between rounds (0: all
        rounds back to back before training)."""
        if (isinstance(iterations, bool) or not isinstance(iterations, int)
                or iterations < 0):
            raise ValueError('iters_between_rounds must be an integer >= 0, '
                             f'got {iterations!r}')
        if iterations and not self.prunes_during_training:
            raise ValueError(
                f'granularity={self.granularity!r} prunes before the first '
                'optimizer step; rounds during training '
                f'(iters_between_rounds={iterations}) are not supported. Set '
                'iters_between_rounds=0 (rounds back to back before '
                "training) or prune weights (granularity='weight').")

    def config(self) -> Dict[str, Any]:
        """The settings a pruned model records (see
        :class:`~epsd_mm.pruning.PruningRecord`)."""
        return dict(
            granularity=self.granularity,
            sparsity=self.sparsity,
            criterion=self.criterion.name,
            criterion_options=to_plain(self.criterion.options),
            scopes=list(self.scopes),
            selection=self.selection,
            min_density=self.min_density,
            rounds=self.rounds,
            round_to=self.round_to)

    def check_model(self, model: nn.Module) -> None:
        """Check, before any data is drawn, that ``model`` can be pruned as
        configured (scopes match, floors fit the budget)."""
        prunable_parameters(model, self.scopes)

    def prune(self,
              model: nn.Module,
              loss_fn: Optional[LossFn] = None,
              batches: Batches = None,
              **kwargs: Any) -> PruningReport:
        """Run every remaining round; see :meth:`prune_round`.

        Args:
            model (nn.Module): The model, changed in place.
            loss_fn (Callable, optional): The scoring loss.
            batches (Iterable | Callable, optional): Batches for every
                round, or ``batches(round)`` returning a round's batches.
            **kwargs: Keyword arguments of :meth:`prune_round`.

        Returns:
            PruningReport: The last round's report.
        """
        report = None
        while not self.done:
            round_batches = (
                batches(self.rounds_done + 1) if callable(batches) else
                batches)
            report = self.prune_round(model, loss_fn, round_batches, **kwargs)
        if report is None:
            raise RuntimeError(f'all {self.rounds} rounds are done already')
        return report

    def prune_round(self,
                    model: nn.Module,
                    loss_fn: Optional[LossFn] = None,
                    batches: Optional[Iterable[Any]] = None,
                    **kwargs: Any) -> PruningReport:
        """Score, select and apply the next round; see :meth:`prune_to`
        for the arguments.

        Returns:
            PruningReport: What the round did.
        """
        round_ = self.rounds_done + 1
        report = self.prune_to(model, self.round_sparsity(round_), loss_fn,
                               batches, **kwargs)
        self.rounds_done = round_
        report.round = round_
        return report

    def prune_to(self,
                 model: nn.Module,
                 target: float,
                 loss_fn: Optional[LossFn] = None,
                 batches: Optional[Iterable[Any]] = None,
                 forward_fn: Optional[ForwardFn] = None,
                 reduce: Optional[Reduce] = None,
                 broadcast: Optional[Broadcast] = None,
                 progress: Optional[Progress] = None,
                 score_cache: Optional[ScoreCache] = None,
                 cache_tag: Any = None) -> PruningReport:
        """Score, select and apply one step to ``target``, outside the
        round schedule (e.g. a step of a gradual schedule).

        Args:
            model (nn.Module): The model (unwrapped, not DDP), changed in
                place. In the mode to score in (usually train).
            target (float): The sparsity to reach.
            loss_fn (Callable, optional): ``loss_fn(model, batch) -> scalar
                tensor``, the scoring loss of data criteria (None for
                data-free ones).
            batches (Iterable, optional): The batches to score on.
            forward_fn (Callable, optional): ``forward_fn(model, x)``
                running the network on a plain input tensor through every
                layer used in training (tracing channels, data-free
                criteria). Defaults to None (``model(x)``).
            reduce (Callable, optional): Averages a tensor over ranks in
                place. Defaults to None (one process).
            broadcast (Callable, optional): Copies rank 0's tensor to every
                rank in place. Defaults to None.
            progress (Callable, optional): ``progress(message, fraction)``
                while scoring. Defaults to None.
            score_cache (ScoreCache, optional): Where scores are kept when
                selection refuses them, and looked up before scoring.
                Defaults to None.
            cache_tag (Any): What else the scores depend on (e.g. the
                scoring loss), part of the cache key. Defaults to None.

        Returns:
            PruningReport: What the step did.
        """
        start = time.perf_counter()
        check_sparsity(target)
        batches = list(batches or ())
        if loss_fn is not None and self.criterion.data != 'batches':
            raise ValueError(
                f'criterion {self.criterion.name!r} is data-free and takes '
                'no loss_fn; pass loss_fn=None (its scores do not depend on '
                'a loss)')
        inputs = ScoringInputs(model, loss_fn, batches or None, forward_fn,
                               target, progress)
        units = self._units(model, inputs)
        key = None
        if score_cache is not None:
            key = score_cache.key(
                model, batches, self.granularity, self.criterion.name,
                self.criterion.options, list(self.scopes), cache_tag,
                target if self.criterion.uses_sparsity else None)
        scores, cached = self._cached_scores(score_cache, key, reduce)
        if scores is None:
            scores = self._score(units, inputs)
            for score in scores.values():
                if reduce is not None:
                    reduce(score)
        after_scoring = rng_state()
        try:
            keep = self._select(model, units, scores, target)
        except ValueError as error:
            if score_cache is None or not all(
                    torch.isfinite(s).all() for s in scores.values()):
                raise
            path = score_cache.save(key, scores, after_scoring)
            raise ValueError(
                f'{error} The scores are kept in {path}: a rerun with the '
                'same model, data and criterion reuses them instead of '
                'scoring again.') from None
        if broadcast is not None:
            for mask in keep.values():
                broadcast(mask)  # ties or per-rank randomness
        tied = self._tied_kept(model, scores, keep)
        table = self._apply(model, units, keep)
        if score_cache is not None:
            score_cache.remove(key)
        return PruningReport(
            granularity=self.granularity,
            round=self.rounds_done,
            rounds=self.rounds,
            criterion=self.criterion.name,
            target=target,
            **self._counts(model, keep),
            num_batches=0 if cached or loss_fn is None else len(batches),
            seconds=time.perf_counter() - start,
            table=table,
            zero_score_layers=[n for n, s in scores.items() if not s.any()],
            tied_kept=tied,
            round_to=self.round_to,
            replaced_parameters=self.replaces_parameters,
            cached=cached)

    @staticmethod
    def _cached_scores(cache: Optional[ScoreCache], key: Optional[str],
                       reduce: Optional[Reduce]):
        """Scores from the cache when every rank has them, else None."""
        if cache is None:
            return None, False
        hit = torch.tensor([float(key in cache)])
        if reduce is not None:
            reduce(hit)
        if float(hit) < 1.0:
            return None, False
        return cache.load(key), True

    # What the granularities implement ------------------------------------
    def _units(self, model: nn.Module, inputs: ScoringInputs) -> Any:
        """What is scored (prunable weights, or a channel graph)."""
        raise NotImplementedError

    def _score(self, units: Any, inputs: ScoringInputs) -> Dict[str, Tensor]:
        raise NotImplementedError

    def _select(self, model: nn.Module, units: Any,
                scores: Dict[str, Tensor],
                target: float) -> Dict[str, Tensor]:
        raise NotImplementedError

    def _apply(self, model: nn.Module, units: Any,
               keep: Dict[str, Tensor]) -> str:
        raise NotImplementedError

    def _counts(self, model: nn.Module,
                keep: Dict[str, Tensor]) -> Dict[str, Any]:
        """``sparsity``, ``kept`` and ``total`` after applying ``keep``."""
        raise NotImplementedError

    def _tied_kept(self, model: nn.Module, scores: Dict[str, Tensor],
                   keep: Dict[str, Tensor]) -> int:
        """Kept units that tie order chose (not counted for channels)."""
        return 0


class WeightPruner(Pruner):
    """Prune individual weights of the Conv/Linear/attention layers in
    scope with keep-masks (unstructured; see :class:`Pruner` for the
    arguments).

    Later rounds (and pruning a model that carries masks already) score the
    masked network, and only surviving weights compete, so the masks only
    grow. Pair the masks with
    :func:`~epsd_mm.pruning.register_mask_enforcement` so that optimizer
    steps keep pruned weights at zero.
    """

    granularity = 'weight'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.round_to != 1:
            raise ValueError(
                f'round_to={self.round_to} rounds the channels each group '
                "keeps; granularity='weight' masks single weights, so it "
                "cannot take effect. Set granularity='channel' or drop "
                'round_to.')

    def check_model(self, model: nn.Module) -> None:
        params = prunable_parameters(model, self.scopes)
        if self.selection == 'global':
            check_floors_fit([p.numel() for p in params.values()],
                             self.sparsity, self.min_density)

    def _units(self, model: nn.Module,
               inputs: ScoringInputs) -> Dict[str, nn.Parameter]:
        return prunable_parameters(model, self.scopes)

    def _score(self, units: Dict[str, nn.Parameter],
               inputs: ScoringInputs) -> Dict[str, Tensor]:
        scores = self.criterion.weight_scores(units, inputs)
        return {name: score.detach() for name, score in scores.items()}

    @staticmethod
    def _competing(model: nn.Module,
                   scores: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The scores with weights pruned by an earlier round (or masks the
        model came with) pushed below every survivor: only survivors
        compete, so masks only shrink."""
        previous = get_masks(model)
        survivors = {n: previous[n] for n in scores if n in previous}
        if not survivors:
            return scores
        floor = min(float(s.min()) for s in scores.values()) - 1.0
        return {
            name: torch.where(survivors[name], s, torch.full_like(s, floor))
            if name in survivors else s
            for name, s in scores.items()
        }

    def _select(self, model: nn.Module, units: Dict[str, nn.Parameter],
                scores: Dict[str, Tensor],
                target: float) -> Dict[str, Tensor]:
        return select_masks(
            self._competing(model, scores),
            target,
            selection=self.selection,
            min_density=self.min_density)

    def _tied_kept(self, model: nn.Module, scores: Dict[str, Tensor],
                   keep: Dict[str, Tensor]) -> int:
        return tied_kept(self._competing(model, scores), keep, self.selection)

    def _apply(self, model: nn.Module, units: Dict[str, nn.Parameter],
               keep: Dict[str, Tensor]) -> str:
        apply_masks(model, keep)
        return format_sparsity_table(sparsity_stats(model))

    def _counts(self, model: nn.Module,
                keep: Dict[str, Tensor]) -> Dict[str, Any]:
        total = sum(m.numel() for m in keep.values())
        kept = sum(int(m.sum()) for m in keep.values())
        return dict(sparsity=1.0 - kept / total, kept=kept, total=total)


class ChannelPruner(Pruner):
    """Remove whole output channels of the layers in scope (structured; see
    :class:`Pruner` for the arguments).

    The channels that must go together (residual streams, norm layers, the
    consumers' input channels, heads included) are grouped by
    torch-pruning, traced with ``forward_fn`` on one sample of the first
    batch (so channel pruning needs one batch even for data-free
    criteria), scored, selected and physically removed. ``sparsity`` is the
    fraction of the channels in scope removed, counted per group; a model
    slim already (a later round) is cut down to ``1 - sparsity`` of its
    dense channel count. Layers outside the scopes only adapt their input
    channels. Only before the first optimizer step: rounds run back to
    back.
    """

    granularity = 'channel'
    replaces_parameters = True
    prunes_during_training = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_scores_channels(self.criterion)

    @property
    def num_batches(self) -> int:
        return max(1, self._batches)  # the groups are traced on one

    def _units(self, model: nn.Module,
               inputs: ScoringInputs) -> ChannelGraph:
        example = first_sample(inputs.batches, 'channel pruning (tracing)')
        graph = ChannelGraph(model, example, inputs.forward_fn, self.scopes)
        if self.selection == 'global':
            check_floors_fit(
                [g.num_channels for g in graph.groups.values()],
                self._graph_sparsity(model, graph, inputs.sparsity),
                self.min_density,
                unit='channel')
        return graph

    @staticmethod
    def _graph_sparsity(model: nn.Module, graph: ChannelGraph,
                        target: float) -> float:
        """The fraction of ``graph``'s channels to remove so that
        ``1 - target`` of the dense channels are left."""
        earlier = get_slim_spec(model)
        dense = (earlier['channels']['total']
                 if earlier and 'channels' in earlier else graph.num_channels)
        kept = round((1.0 - target) * dense)
        if kept < len(graph.groups):
            sizes = [g.num_channels for g in graph.groups.values()]
            raise ValueError(
                f'sparsity {target} keeps {kept} of the {dense} channels in '
                f'scope, fewer than one in each of its {len(sizes)} channel '
                'groups; use a sparsity of at most '
                f'{max_sparsity_with_one_each(sizes)} or widen the scopes')
        return max(0.0, 1.0 - kept / graph.num_channels)

    def _score(self, units: ChannelGraph,
               inputs: ScoringInputs) -> Dict[str, Tensor]:
        scores = self.criterion.channel_scores(units, inputs)
        return {name: score.detach() for name, score in scores.items()}

    def _select(self, model: nn.Module, units: ChannelGraph,
                scores: Dict[str, Tensor],
                target: float) -> Dict[str, Tensor]:
        return select_channels(
            scores,
            self._graph_sparsity(model, units, target),
            selection=self.selection,
            normalize=self.criterion.channel_normalization,
            min_density=self.min_density,
            round_to=self.round_to)

    def _apply(self, model: nn.Module, units: ChannelGraph,
               keep: Dict[str, Tensor]) -> str:
        table = format_slim_table(slim_channels(units, keep))
        if units.attention_groups:
            table = ('output channels kept whole (they reach an attention, '
                     'whose width must stay a multiple of its heads): '
                     f'{", ".join(units.attention_groups)}\n' + table)
        if units.output_groups:
            table = ('output channels kept whole (no layer reads them, e.g. '
                     f'class channels): {", ".join(units.output_groups)}\n' +
                     table)
        return table

    def _counts(self, model: nn.Module,
                keep: Dict[str, Tensor]) -> Dict[str, Any]:
        channels = get_slim_spec(model)['channels']
        return dict(
            sparsity=1.0 - channels['kept'] / channels['total'],
            kept=channels['kept'],
            total=channels['total'])


#: Pruner class by granularity.
PRUNERS: Dict[str, type] = {
    cls.granularity: cls
    for cls in (WeightPruner, ChannelPruner)
}


def build_pruner(granularity: str = 'weight', **kwargs: Any) -> Pruner:
    """The pruner of a granularity (``'weight'`` or ``'channel'``).

    Args:
        granularity (str): A key of :data:`PRUNERS`. Defaults to
            ``'weight'``.
        **kwargs: Arguments of :class:`Pruner`.

    Returns:
        Pruner: The pruner.
    """
    if granularity not in PRUNERS:
        raise ValueError(f'granularity must be one of {tuple(PRUNERS)}, got '
                         f'{granularity!r}')
    return PRUNERS[granularity](**kwargs)


__all__ = [
    'Broadcast', 'ChannelPruner', 'PRUNERS', 'Pruner', 'PruningReport',
    'Reduce', 'WeightPruner', 'build_pruner'
]
