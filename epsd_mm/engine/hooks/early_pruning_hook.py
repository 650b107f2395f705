"""Prune the network before training starts (EPSD and its baselines)."""
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmengine import dist
from mmengine.hooks import EMAHook
from torch import Tensor, nn

from epsd_mm.models.scoring import (SCORING_LOSSES, ScoringLoss,
                                    scoring_state, tensor_forward)
from epsd_mm.pruning import (SELECTIONS, apply_masks, check_criterion_batches,
                             check_criterion_options, check_sparsity,
                             compute_scores,
                             criterion_needs_batches, get_masks, get_scorer,
                             normalize_scopes, prunable_parameters,
                             select_masks)
from epsd_mm.pruning.channel_scores import (channel_criterion_needs_batches,
                                            check_channel_criterion_options,
                                            get_channel_scorer)
from epsd_mm.pruning.slimming import format_slim_table, get_slim_spec
from epsd_mm.registry import HOOKS
from .channel_pruning import (format_complexity, model_complexity,
                              prune_channels, rebind_runner)
from .mask_hook import BaseMaskHook, unwrap_model
from .slim_checkpoint_hook import SlimCheckpointMixin

#: What the hook prunes: weights (masks) or output channels (removed).
GRANULARITIES = ('weight', 'channel')


class ScoringProgress:
    """Progress of a scoring run, as log lines with an ETA (rank 0 only).

    Called by the pruning core as ``progress(message, fraction)``; a line is
    logged at most every ``interval`` seconds, and at the end.

    Args:
        logger: The runner's logger (lines reach the log file).
        prefix (str): Start of every line.
        interval (float): Seconds between lines. Defaults to 5.
    """

    def __init__(self, logger, prefix: str, interval: float = 5.0) -> None:
        self.logger = logger
        self.prefix = prefix
        self.interval = interval
        self.start = time.perf_counter()
        self.last = -float('inf')

    def __call__(self, message: str, fraction: float) -> None:
        now = time.perf_counter()
        if fraction < 1 and now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        self.logger.info(f'{self.prefix}: {message} ({fraction:.0%}, '
                         f'elapsed {elapsed:.1f}s, ETA {eta:.1f}s)')


@HOOKS.register_module()
class EarlyPruningHook(SlimCheckpointMixin, BaseMaskHook):
    """Score every prunable weight (or channel) before training and cut to a
    sparsity.

    At ``before_train`` the hook draws ``num_batches`` batches from the
    train dataloader (through the model's data preprocessor), scores the
    prunable weights with ``criterion`` on the *scoring loss*, keeps the
    best ``1 - sparsity`` fraction and stores the masks as buffers (see
    :mod:`epsd_mm.pruning.masks`). Pruned weights are zeroed and stay
    exactly zero after every optimizer step. Masks travel in checkpoints:
    on resume (or ``load_from`` a pruned checkpoint) they are restored and
    nothing is re-scored; a checkpoint pruned with other settings than the
    config's stops the run (see :class:`BaseMaskHook`).

    With ``loss='sd'`` the scoring loss is the task loss plus the model's SD
    loss, as its SD method defines it at initialisation (EPSD); with
    ``loss='task'`` the SD term is switched off (the "simple combination"
    baseline).

    **EPSD-It**: with ``rounds=R > 1`` the target is reached in R rounds;
    round ``r`` scores the currently masked network and keeps the best of
    its surviving weights, so that the sparsity after round ``r`` is
    ``1 - (1 - sparsity) ** (r / R)``. Rounds run back to back at
    ``before_train``, or ``iters_between_rounds`` training iterations apart;
    checkpoints record the rounds done, so a run stopped between rounds
    resumes at the right round.

    Under DDP every rank scores its own batches, the scores are averaged
    over ranks and rank 0's masks are broadcast, so all ranks hold identical
    masks.

    **Channels** (``granularity='channel'``, structured EPSD): the output
    channels in ``scopes`` are grouped as they must be cut together
    (residual streams, BatchNorm, the consumers' input channels, traced by
    torch-pruning on one image of the first batch, all heads included),
    scored by a channel criterion of
    :data:`epsd_mm.pruning.channel_scores.CHANNEL_SCORERS` (``'prospr'``,
    ``'snip'``, ``'magnitude'`` = L1 norm of the filters, ``'random'``) and
    **physically removed** before the first optimizer step; layers outside
    the scopes (the heads) only adapt their input channels. The optimizer
    and the DDP wrapper are re-bound to the slim parameters, parameters and
    FLOPs before -> after (``mmengine.analysis``) and the changed layers are
    logged. The meaning of the options for channels:

    * ``sparsity``: fraction of the channels in scope removed, counted per
      group (a residual stream shared by several layers counts once);
    * ``selection``: ``'global'`` ranks all channels together (gradient
      scores as they are; magnitude scores relative to their group's mean,
      since filter norms grow with fan-in), ``'layerwise'`` removes the same
      fraction of every group;
    * ``min_density``: per-group floor of kept channels (at least one);
      with 0 a group that would lose all its channels raises an error;
    * ``rounds > 1`` (EPSD-It): rounds run back to back before training,
      each scoring the network slimmed by the previous one; the channels
      left after round ``r`` are ``(1 - sparsity) ** (r / R)`` of the dense
      ones. Rounds during training (``iters_between_rounds > 0``) are not
      supported: the optimizer state of removed channels would have to be
      cut as well.

    The checkpoints record the slim architecture (see
    :class:`SlimCheckpointMixin`): resume, ``load_from``, ``tools/test.py``
    and mmseg's own ``tools/test.py`` rebuild it before the weights load.

    Args:
        sparsity (float): Fraction of the prunable weights set to zero (or
            of the channels removed), in ``[0, 1)``. Defaults to 0.9.
        criterion (str): A criterion of :data:`epsd_mm.pruning.SCORERS`
            (``'prospr'``, ``'snip'``, ``'grasp'``, ``'synflow'``,
            ``'magnitude'``, ``'random'``), or of the channel criteria for
            ``granularity='channel'``. Defaults to ``'prospr'``.
        criterion_cfg (dict, optional): Options of the criterion, e.g.
            ``dict(num_steps=3, lr=0.1, first_order=False)`` for prospr or
            ``dict(rounds=100)`` for synflow; unset options keep the
            criterion's own defaults. Defaults to None.
        loss (str): Scoring loss, ``'sd'`` (EPSD) or ``'task'``.
            Defaults to ``'sd'``.
        scopes (Sequence[str]): Module names (or globs) whose weight
            matrices are prunable; each must contain some. Defaults to
            ``('backbone',)``.
        num_batches (int): Train batches drawn per scoring round, if the
            criterion scores on data. Defaults to 4.
        selection (str): ``'global'`` top-k over all layers or
            ``'layerwise'``. Defaults to ``'global'``.
        min_density (float): Floor of kept weights per layer, in
            ``[0, 1]``; 0 raises an error when a layer would be fully
            pruned. Defaults to 0.
        rounds (int): Scoring rounds to reach ``sparsity`` (EPSD-It for
            ``rounds > 1``). Defaults to 1.
        iters_between_rounds (int): Training iterations between rounds; 0
            runs all rounds before training. Defaults to 0.
        granularity (str): ``'weight'`` (masks) or ``'channel'`` (channels
            removed). Defaults to ``'weight'``.
    """

    def __init__(self,
                 sparsity: float = 0.9,
                 criterion: str = 'prospr',
                 criterion_cfg: Optional[dict] = None,
                 loss: str = 'sd',
                 scopes: Union[str, Sequence[str]] = ('backbone', ),
                 num_batches: int = 4,
                 selection: str = 'global',
                 min_density: float = 0.0,
                 rounds: int = 1,
                 iters_between_rounds: int = 0,
                 granularity: str = 'weight') -> None:
        super().__init__()
        name = type(self).__name__
        if granularity not in GRANULARITIES:
            raise ValueError(f'{name}: granularity must be one of '
                             f'{GRANULARITIES}, got {granularity!r}.')
        self.granularity = granularity
        try:
            check_sparsity(sparsity)
            if granularity == 'channel':
                get_channel_scorer(criterion)
                check_channel_criterion_options(criterion, criterion_cfg
                                                or {})
            else:
                get_scorer(criterion)
                check_criterion_options(criterion, criterion_cfg or {})
            self.scopes = normalize_scopes(scopes)
        except ValueError as error:
            raise ValueError(f'{name}: {error}') from None
        if loss not in SCORING_LOSSES:
            raise ValueError(
                f"{name}: loss must be 'sd' (EPSD) or 'task' (simple "
                f'combination), got {loss!r}.')
        if granularity == 'channel' and iters_between_rounds:
            raise ValueError(
                f'{name}: granularity=\'channel\' removes channels before '
                'the first optimizer step; rounds during training '
                f'(iters_between_rounds={iters_between_rounds}) are not '
                'supported. Set iters_between_rounds=0 (rounds back to back '
                "before training) or prune weights (granularity='weight').")
        if self._needs_batches(criterion):
            if num_batches < 1:
                raise ValueError(
                    f'{name}: criterion {criterion!r} scores on data and '
                    f'needs num_batches >= 1, got {num_batches}.')
            try:
                check_criterion_batches(criterion, num_batches,
                                        criterion_cfg or {})
            except ValueError as error:
                raise ValueError(f'{name}: num_batches={num_batches}: '
                                 f'{error}') from None
        if selection not in SELECTIONS:
            raise ValueError(f'{name}: selection must be one of '
                             f'{SELECTIONS}, got {selection!r}.')
        if not 0.0 <= min_density <= 1.0:
            raise ValueError(
                f'{name}: min_density must be in [0, 1], got {min_density}'
                ' (0.01 keeps at least 1% of every layer).')
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(
                f'{name}: rounds must be a positive integer, got {rounds}.')
        if iters_between_rounds < 0:
            raise ValueError(f'{name}: iters_between_rounds must be >= 0, '
                             f'got {iters_between_rounds}.')
        self.sparsity = float(sparsity)
        self.criterion = criterion
        self.criterion_cfg = dict(criterion_cfg or {})
        self.loss = loss
        self.num_batches = num_batches
        self.selection = selection
        self.min_density = min_density
        self.rounds = rounds
        self.iters_between_rounds = iters_between_rounds
        self.rounds_done = 0
        self.loaded_slim = False

    def _needs_batches(self, criterion: str) -> Optional[bool]:
        if self.granularity == 'channel':
            return channel_criterion_needs_batches(criterion)
        return criterion_needs_batches(criterion)

    # What checkpoints record ----------------------------------------------
    def pruning_config(self) -> Dict[str, Any]:
        return dict(
            granularity=self.granularity,
            sparsity=self.sparsity,
            criterion=self.criterion,
            loss=self.loss,
            scopes=list(self.scopes),
            selection=self.selection,
            rounds=self.rounds)

    def config_mismatch(self) -> Dict[str, tuple]:
        mismatch = super().config_mismatch()
        # What was loaded decides, also for checkpoints whose meta predates
        # the granularity key (weight masks only).
        restored = ('channel' if self.loaded_slim else
                    'weight' if self.loaded_masks else None)
        if restored is not None and restored != self.granularity:
            mismatch = {
                'granularity': (restored, self.granularity),
                **mismatch
            }
        return mismatch

    def model_is_pruned(self, model: nn.Module) -> bool:
        return bool(get_masks(model)) or get_slim_spec(model) is not None

    def pruning_progress(self) -> Dict[str, Any]:
        return dict(rounds_done=self.rounds_done)

    def restore_progress(self, progress: Dict[str, Any]) -> None:
        self.rounds_done = int(progress.get('rounds_done', self.rounds))

    def round_sparsity(self, round_: int) -> float:
        """Sparsity after round ``round_`` (1-based) of :attr:`rounds`."""
        if round_ == self.rounds:
            return self.sparsity
        return 1.0 - (1.0 - self.sparsity)**(round_ / self.rounds)

    # Validation before any checkpoint exists ---------------------------
    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        try:
            prunable_parameters(model, self.scopes)
        except ValueError as error:
            raise ValueError(f'{type(self).__name__}: {error}') from None
        if self.loss == 'sd' and getattr(model, 'sd', None) is None:
            raise ValueError(
                "EarlyPruningHook(loss='sd') scores with the model's "
                f'self-distillation loss, but {type(model).__name__} has no '
                "SD method. Configure model.sd (e.g. dict(type='DLB')) or "
                "score with loss='task'.")
        if self.granularity == 'channel':
            copies = [
                type(hook).__name__ for hook in runner.hooks
                if isinstance(hook, EMAHook)
            ]
            if copies:
                raise ValueError(
                    f"EarlyPruningHook(granularity='channel'): {copies[0]} "
                    'keeps a copy of the model built before pruning, which '
                    'removing channels would leave with the dense shapes. '
                    'Remove it from custom_hooks, or prune weights '
                    "(granularity='weight').")

    # Checkpoints ---------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        super().before_save_checkpoint(runner, checkpoint)
        self.save_slim_spec(runner, checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # The architecture first: masks and weights load into its shapes.
        self.loaded_slim = self.restore_slim(runner, checkpoint) is not None
        super().after_load_checkpoint(runner, checkpoint)

    # Evaluation ----------------------------------------------------------
    def before_val(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=True)

    def before_test(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=True)
        super().before_test(runner)

    def _add_channel_sparsity(self, runner, metrics: Optional[dict]) -> None:
        spec = get_slim_spec(unwrap_model(runner.model))
        if metrics is not None and spec and 'channels' in spec:
            channels = spec['channels']
            metrics['channel_sparsity'] = (
                1.0 - channels['kept'] / channels['total'])

    def after_val_epoch(self, runner, metrics=None) -> None:
        super().after_val_epoch(runner, metrics)
        self._add_channel_sparsity(runner, metrics)

    def after_test_epoch(self, runner, metrics=None) -> None:
        super().after_test_epoch(runner, metrics)
        self._add_channel_sparsity(runner, metrics)

    # Pruning -----------------------------------------------------------
    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        self.check_loaded_shapes(runner, strict=False)
        if self.loaded_masks or self.loaded_slim:
            self.check_restored(runner)
            if not self.loaded_meta:  # written before epsd_mm 0.2
                self.rounds_done = self.rounds
            what = 'channels' if self.loaded_slim else 'masks'
            runner.logger.info(
                f'EarlyPruningHook: {what} restored from the checkpoint; not '
                f're-scoring ({self.rounds_done}/{self.rounds} rounds '
                'done).')
        elif get_masks(model) or get_slim_spec(model) is not None:
            raise ValueError(
                'EarlyPruningHook: the model is pruned already (masks or '
                'removed channels) and no checkpoint brought it; another '
                'pruning hook or the model config (SlimModel) did. Use one '
                'EarlyPruningHook per run, on the dense model.')
        self._run_due_rounds(runner)
        if self.granularity == 'weight':
            self.log_sparsity(runner)
            self.enforce(runner)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if self.rounds_done < self.rounds and self._run_due_rounds(runner):
            self.log_sparsity(runner)

    def _run_due_rounds(self, runner) -> bool:
        """Run the rounds scheduled up to the current iteration."""
        ran = False
        while (self.rounds_done < self.rounds and
               self.rounds_done * self.iters_between_rounds <= runner.iter):
            self._prune_round(runner, self.rounds_done + 1)
            self.rounds_done += 1
            ran = True
        return ran

    def _prune_round(self, runner, round_: int) -> None:
        if self.granularity == 'channel':
            self._prune_channels_round(runner, round_)
        else:
            self._prune_weights_round(runner, round_)

    def _prune_channels_round(self, runner, round_: int) -> None:
        model = unwrap_model(runner.model)
        needs = self._needs_batches(self.criterion)
        # One batch at least: the groups are traced on its first image.
        batches = self._draw_batches(runner, model,
                                     self.num_batches if needs else 1)
        example = batches[0]['inputs'][:1]
        target = self.round_sparsity(round_)
        what = (f'round {round_}/{self.rounds}: ' if self.rounds > 1 else '')
        runner.logger.info(
            f'EarlyPruningHook: {what}scoring the channels of '
            f'{", ".join(self.scopes)} with {self.criterion} on the '
            f'{self.loss} loss ({len(batches) if needs else 0} batches, '
            f'options {self.criterion_cfg or "default"}), target channel '
            f'sparsity {target:.4f}.')
        start = time.perf_counter()
        before = dict(model.named_parameters())
        dense = model_complexity(model, example)
        earlier = get_slim_spec(model)
        spec = prune_channels(
            model,
            batches if needs else [],
            example,
            target,
            self.criterion,
            self.criterion_cfg,
            self.loss,
            self.scopes,
            selection=self.selection,
            min_density=self.min_density,
            progress=self._progress(runner, what))
        rebind_runner(runner, before)
        total, kept = spec['channels']['total'], spec['channels']['kept']
        kept_before = earlier['channels']['kept'] if earlier else total
        runner.logger.info(
            f'EarlyPruningHook: {what}removed {kept_before - kept} channels '
            f'in {time.perf_counter() - start:.1f}s, {kept} of {total} kept '
            f'(channel sparsity {1 - kept / total:.2%}); ' +
            format_complexity(dense, model_complexity(model, example),
                              example) + '. Changed layers:\n' +
            format_slim_table(spec))

    @staticmethod
    def _progress(runner, what: str) -> Optional[ScoringProgress]:
        """Scoring progress for the log, written by rank 0 only."""
        if runner.rank != 0:
            return None
        return ScoringProgress(runner.logger,
                               f'EarlyPruningHook {what}scoring')

    def _prune_weights_round(self, runner, round_: int) -> None:
        model = unwrap_model(runner.model)
        params = prunable_parameters(model, self.scopes)
        needs = criterion_needs_batches(self.criterion)
        batches = self._draw_batches(
            runner, model,
            self.num_batches if needs else (1 if needs is None else 0))
        target = self.round_sparsity(round_)
        what = (f'round {round_}/{self.rounds}: ' if self.rounds > 1 else '')
        runner.logger.info(
            f'EarlyPruningHook: {what}scoring {len(params)} layers with '
            f'{self.criterion} on the {self.loss} loss ({len(batches)} '
            f'batches, options {self.criterion_cfg or "default"}), target '
            f'sparsity {target:.4f}.')
        with scoring_state(model, self.loss):
            scores = compute_scores(
                model,
                ScoringLoss(model),
                batches or None,
                criterion=self.criterion,
                params=params,
                forward_fn=tensor_forward,
                sparsity=target,
                progress=self._progress(runner, what),
                **self.criterion_cfg)
        for score in scores.values():
            dist.all_reduce(score, op='mean')  # no-op when not distributed
        self._warn_zero_scores(runner, scores)
        previous = get_masks(model)
        if previous:  # later rounds: only surviving weights compete
            floor = min(float(s.min()) for s in scores.values()) - 1.0
            scores = {
                name: torch.where(previous[name], s, torch.full_like(s, floor))
                for name, s in scores.items()
            }
        masks = select_masks(
            scores,
            target,
            selection=self.selection,
            min_density=self.min_density)
        # Ties or per-rank randomness must not split the ranks' masks.
        for mask in masks.values():
            dist.broadcast(mask, src=0)  # no-op when not distributed
        apply_masks(model, masks)

    def _warn_zero_scores(self, runner, scores: Dict[str, Tensor]) -> None:
        """Layers scored all zero are cut by tie order, not by merit."""
        dead = [name for name, score in scores.items() if not score.any()]
        if dead:
            runner.logger.warning(
                f'EarlyPruningHook: {len(dead)} layers score exactly 0 under '
                f'{self.criterion}, so their masks follow tie order: '
                f'{", ".join(dead[:6])}{" ..." if len(dead) > 6 else ""}. '
                'A common cause is zero-initialised residual BN layers at '
                'random init: set backbone.zero_init_residual=False, or use '
                "criterion='prospr', whose inner steps revive them.")

    def _draw_batches(self, runner, model: nn.Module,
                      num_batches: int) -> List[dict]:
        """Draw batches the way the train loop does. Iteration-based loops
        share their (infinite) iterator: a second iterator over an
        ``InfiniteSampler`` would close its shared index generator."""
        if num_batches == 0:
            return []
        loop = runner.train_loop
        stream = getattr(loop, 'dataloader_iterator', None) or iter(
            loop.dataloader)
        batches = []
        for data in stream:
            batches.append(model.data_preprocessor(data, training=True))
            if len(batches) == num_batches:
                return batches
        raise ValueError(
            f'EarlyPruningHook: the train dataloader yielded only '
            f'{len(batches)} batches but num_batches={num_batches}. '
            'Lower num_batches, or use more data / drop_last=False.')
