"""Prune the network before training starts (EPSD and its baselines)."""
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmengine import dist
from torch import Tensor, nn

from epsd_mm.models.scoring import (SCORING_LOSSES, ScoringLoss,
                                    scoring_state, tensor_forward)
from epsd_mm.pruning import (SELECTIONS, apply_masks, check_criterion_options,
                             check_sparsity, compute_scores,
                             criterion_needs_batches, get_masks, get_scorer,
                             normalize_scopes, prunable_parameters,
                             select_masks)
from epsd_mm.registry import HOOKS
from .mask_hook import BaseMaskHook, unwrap_model


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
class EarlyPruningHook(BaseMaskHook):
    """Score every prunable weight before training and cut to a sparsity.

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

    Args:
        sparsity (float): Fraction of the prunable weights set to zero, in
            ``[0, 1)``. Defaults to 0.9.
        criterion (str): A criterion of :data:`epsd_mm.pruning.SCORERS`
            (``'prospr'``, ``'snip'``, ``'grasp'``, ``'synflow'``,
            ``'magnitude'``, ``'random'``). Defaults to ``'prospr'``.
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
                 iters_between_rounds: int = 0) -> None:
        super().__init__()
        name = type(self).__name__
        try:
            check_sparsity(sparsity)
            get_scorer(criterion)
            check_criterion_options(criterion, criterion_cfg or {})
            self.scopes = normalize_scopes(scopes)
        except ValueError as error:
            raise ValueError(f'{name}: {error}') from None
        if loss not in SCORING_LOSSES:
            raise ValueError(
                f"{name}: loss must be 'sd' (EPSD) or 'task' (simple "
                f'combination), got {loss!r}.')
        if criterion_needs_batches(criterion) and num_batches < 1:
            raise ValueError(
                f'{name}: criterion {criterion!r} scores on data and needs '
                f'num_batches >= 1, got {num_batches}.')
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

    # What checkpoints record ----------------------------------------------
    def pruning_config(self) -> Dict[str, Any]:
        return dict(
            sparsity=self.sparsity,
            criterion=self.criterion,
            loss=self.loss,
            scopes=list(self.scopes),
            selection=self.selection,
            rounds=self.rounds)

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

    # Pruning -----------------------------------------------------------
    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if self.loaded_masks:
            self.check_restored(runner)
            if not self.loaded_meta:  # written before epsd_mm 0.2
                self.rounds_done = self.rounds
            runner.logger.info(
                'EarlyPruningHook: masks restored from the checkpoint; not '
                f're-scoring ({self.rounds_done}/{self.rounds} rounds '
                'done).')
        elif get_masks(model):
            raise ValueError(
                'EarlyPruningHook: the model already has pruning masks that '
                'no checkpoint brought; another pruning hook set them. Use '
                'one EarlyPruningHook per run.')
        self._run_due_rounds(runner)
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
        progress = (
            ScoringProgress(runner.logger, f'EarlyPruningHook {what}scoring')
            if runner.rank == 0 else None)
        with scoring_state(model, self.loss):
            scores = compute_scores(
                model,
                ScoringLoss(model),
                batches or None,
                criterion=self.criterion,
                params=params,
                forward_fn=tensor_forward,
                sparsity=target,
                progress=progress,
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
