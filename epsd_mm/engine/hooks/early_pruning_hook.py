"""Prune the network before training starts (EPSD and its baselines)."""
import os.path as osp
from typing import Any, Dict, Optional, Sequence, Union

from mmengine.hooks import EMAHook

from epsd_mm.models.scoring import (ScoringLoss, scoring_loss_of,
                                    scoring_state, trace_forward)
from epsd_mm.pruning import (ScoreCache, build_criterion, build_pruner,
                             first_sample, get_masks, get_slim_spec)
from epsd_mm.registry import HOOKS
from ..runner_utils import (ScoringProgress, broadcast_from_rank0,
                            draw_batches, rebind_runner, reduce_mean,
                            unwrap_model)
from .pruning_checkpoint_hook import PruningCheckpointHook, complexity


@HOOKS.register_module()
class EarlyPruningHook(PruningCheckpointHook):
    """Prune before training: EPSD (ProsPr on the self-distillation loss)
    and its baselines, on weights (masks) or channels (removed).

    At ``before_train`` the hook draws ``num_batches`` batches from the
    train loop and hands them, with the model's scoring loss, to a pruner
    of :mod:`epsd_mm.pruning` (which also owns EPSD-It's rounds). ``loss=
    'sd'`` scores with the task loss plus the SD loss as the model's SD
    method defines it at initialisation (EPSD), ``'task'`` without the SD
    term (the "simple combination"). Checkpoints record the pruning: resume
    and ``load_from`` restore it, never score again, and stop on other
    settings. Scores that selection refuses are kept in
    ``work_dir/pruning_scores`` for the rerun. Under DDP scores are
    averaged over ranks and rank 0's choice is broadcast.

    Args:
        sparsity (float): Fraction of prunable weights (or of the channels
            in scope) removed, in ``[0, 1)``. Defaults to 0.9.
        criterion (str | dict): A criterion of
            :data:`epsd_mm.pruning.CRITERIA`, by name (``'prospr'``) or
            config (``dict(type='ProsPr', num_steps=3)``). Defaults to
            ``'prospr'``.
        criterion_cfg (dict, optional): Options merged into the criterion's
            (e.g. ``dict(num_steps=1)``). Defaults to None.
        loss (str, optional): Scoring loss of data criteria, ``'sd'`` or
            ``'task'``. Defaults to None (``'sd'``; data-free criteria take
            none).
        scopes (Sequence[str]): Module names or globs to prune. Defaults
            to ``('backbone',)``.
        num_batches (int): Train batches drawn per round for data criteria.
            Defaults to 4.
        selection (str): ``'global'`` or ``'layerwise'``. Defaults to
            ``'global'``.
        min_density (float): Floor of kept entries per layer (group); 0
            makes a collapsed layer an error. Defaults to 0.
        rounds (int): Rounds to reach the sparsity. Defaults to 1.
        iters_between_rounds (int): Training iterations between rounds; 0
            runs them back to back before training. Defaults to 0.
        granularity (str): ``'weight'`` or ``'channel'``. Defaults to
            ``'weight'``.
        round_to (int): With ``granularity='channel'``, every channel group
            keeps a multiple of this many channels, so that inference
            engines that compute channels in blocks run the slim network at
            the speed its FLOPs promise (16 for onnxruntime on AVX-512 CPUs,
            8 on AVX2). Defaults to 1 (no rounding).
        keep_scores (bool): Keep scores that selection refuses for the
            rerun. Defaults to True.
    """

    def __init__(self,
                 sparsity: float = 0.9,
                 criterion: Union[str, dict] = 'prospr',
                 criterion_cfg: Optional[dict] = None,
                 loss: Optional[str] = None,
                 scopes: Union[str, Sequence[str]] = ('backbone', ),
                 num_batches: int = 4,
                 selection: str = 'global',
                 min_density: float = 0.0,
                 rounds: int = 1,
                 iters_between_rounds: int = 0,
                 granularity: str = 'weight',
                 round_to: int = 1,
                 keep_scores: bool = True) -> None:
        super().__init__()
        try:
            self.pruner = build_pruner(
                granularity,
                sparsity=sparsity,
                criterion=build_criterion(criterion, **(criterion_cfg or {})),
                scopes=scopes,
                selection=selection,
                min_density=min_density,
                rounds=rounds,
                num_batches=num_batches,
                round_to=round_to)
            self.pruner.check_round_interval(iters_between_rounds)
            self.loss = scoring_loss_of(self.pruner.criterion, loss)
        except (ValueError, TypeError) as error:
            raise ValueError(f'{self.name}: {error}') from None
        self.iters_between_rounds = iters_between_rounds
        self.keep_scores = keep_scores

    def pruning_config(self) -> Dict[str, Any]:
        return dict(self.pruner.config(), loss=self.loss)

    def pruning_progress(self) -> Dict[str, Any]:
        return dict(rounds_done=self.pruner.rounds_done)

    def restore_stage(self, stage: Dict[str, Any], state: dict) -> None:
        self.pruner.rounds_done = int(stage.get('progress', {}).get(
            'rounds_done', self.pruner.rounds))

    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        try:
            self.pruner.check_model(model)
        except ValueError as error:
            raise ValueError(f'{self.name}: {error}') from None
        if self.loss == 'sd' and getattr(model, 'sd', None) is None:
            raise ValueError(
                f"{self.name}(loss='sd') scores with the model's "
                f'self-distillation loss, but {type(model).__name__} has no '
                "SD method. Configure model.sd (e.g. dict(type='DLB')) or "
                "score with loss='task'.")
        copies = [type(h).__name__ for h in runner.hooks
                  if isinstance(h, EMAHook)]
        if self.pruner.replaces_parameters and copies:
            raise ValueError(
                f'{self.name}(granularity={self.pruner.granularity!r}): '
                f'{copies[0]} keeps a copy of the model built before pruning,'
                ' which removing channels would leave with the dense shapes.'
                " Remove it from custom_hooks, or prune weights "
                "(granularity='weight').")

    def before_train(self, runner) -> None:
        self.check_loaded_shapes(runner, strict=False)
        model = unwrap_model(runner.model)
        if self.restored_pruning():
            self.check_restored()
            if self.name not in self.loaded_record.stages:
                self.pruner.rounds_done = self.pruner.rounds  # epsd_mm < 0.2
            runner.logger.info(
                f'{self.name}: pruning restored from the checkpoint; not '
                f're-scoring ({self.pruner.rounds_done}/{self.pruner.rounds} '
                'rounds done).')
        elif get_masks(model) or get_slim_spec(model) is not None:
            raise ValueError(
                f'{self.name}: the model is pruned already (masks or removed '
                'channels) and no checkpoint brought it; another pruning '
                'hook or the model config (SlimModel) did. Use one '
                'EarlyPruningHook per run, on the dense model.')
        self._run_due_rounds(runner)
        self.enforce(runner)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._run_due_rounds(runner)

    def _run_due_rounds(self, runner) -> None:
        """Run the rounds scheduled up to the current iteration."""
        while (not self.pruner.done and self.pruner.rounds_done *
               self.iters_between_rounds <= runner.iter):
            self._prune_round(runner)

    def _prune_round(self, runner) -> None:
        model = unwrap_model(runner.model)
        pruner = self.pruner
        batches = draw_batches(runner, pruner.num_batches, self.name)
        where = (f'round {pruner.rounds_done + 1}/{pruner.rounds}: '
                 if pruner.rounds > 1 else '')
        runner.logger.info(
            f'{self.name}: {where}pruning {pruner.granularity}s of '
            f'{", ".join(pruner.scopes)} with {pruner.criterion!r}'
            + (f' on the {self.loss} loss ({len(batches)} batches)'
               if self.loss else '') + ', target sparsity '
            f'{pruner.round_sparsity(pruner.rounds_done + 1):.4f}.')
        example = first_sample(batches, self.name) if batches else None
        before_params = dict(model.named_parameters())
        before = complexity(model, example)
        cache = (ScoreCache(osp.join(runner.work_dir, 'pruning_scores'))
                 if self.keep_scores else None)
        with scoring_state(model, self.loss):
            report = pruner.prune_round(
                model,
                ScoringLoss(model) if self.loss else None,
                batches,
                forward_fn=trace_forward,
                reduce=reduce_mean,
                broadcast=broadcast_from_rank0,
                progress=ScoringProgress.on_rank0(
                    runner, f'{self.name}: {where}scoring'),
                score_cache=cache,
                cache_tag=(self.loss, str(runner.cfg.model.get('sd')),
                           runner.rank))
        if report.replaced_parameters:
            rebind_runner(runner, before_params)
        runner.logger.info(f'{self.name}: {report.summary()}')
        for warning in report.warnings():
            runner.logger.warning(f'{self.name}: {warning}')
        self.log_pruning(runner, report.table, before, example)
