"""Prune the network before training starts (EPSD and its baselines)."""
from contextlib import contextmanager, nullcontext
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    Union)

from mmengine import dist
from mmengine.utils import ProgressBar
from torch import Tensor, nn

from epsd_mm.pruning import (SCORERS, apply_masks, compute_scores, get_masks,
                             prunable_parameters, select_masks)
from epsd_mm.registry import HOOKS
from .mask_hook import BaseMaskHook, unwrap_model

SCORING_LOSSES = ('sd', 'task')
# Criteria that need no training batches.
DATA_FREE = ('magnitude', 'random', 'synflow')


def model_loss(model: nn.Module, batch: dict) -> Tensor:
    """The scalar training loss of an MMEngine model on a preprocessed batch
    (the ``loss_fn`` the pruning core calls)."""
    losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


@HOOKS.register_module()
class EarlyPruningHook(BaseMaskHook):
    """Score every prunable weight before training and cut to a sparsity.

    At ``before_train`` the hook draws ``num_batches`` batches from the train
    dataloader (through the model's data preprocessor), scores the prunable
    weights with ``criterion`` on the *scoring loss*, keeps the best
    ``1 - sparsity`` fraction and stores the masks as ``*.weight_mask``
    buffers. Pruned weights are zeroed and stay exactly zero after every
    optimizer step. Masks travel in checkpoints: on resume (or ``load_from`` a
    pruned checkpoint) they are restored and nothing is re-scored.

    With ``loss='sd'`` the scoring loss is the task loss plus the model's SD
    loss, exactly as in training (EPSD); with ``loss='task'`` the SD term is
    switched off (the "simple combination" baseline). During scoring the SD
    state is defined at initialisation: DLB's previous-batch targets come from
    the previous inner step, PS-KD's teacher is the network at the start of
    scoring with the final strength ``alpha_T``, CS-KD's partners come from
    the pair sampler of the train loader.

    Under DDP every rank scores its own batches, the scores are averaged over
    ranks and rank 0's masks are broadcast, so all ranks hold identical masks.

    Args:
        sparsity (float): Fraction of the prunable weights set to zero, in
            ``[0, 1)``. Defaults to 0.9.
        criterion (str): One of ``'prospr'``, ``'snip'``, ``'grasp'``,
            ``'synflow'``, ``'magnitude'``, ``'random'``.
            Defaults to ``'prospr'``.
        criterion_cfg (dict, optional): Keyword arguments of the criterion,
            e.g. ``dict(num_steps=3, lr=0.1, first_order=False)`` for prospr
            or ``dict(input_shape=(1, 3, 64, 64), rounds=100)`` for synflow.
            Defaults to ProsPr's ``num_steps=3, lr=0.1, first_order=False``
            when the criterion is prospr, else no arguments.
        loss (str): Scoring loss, ``'sd'`` (EPSD) or ``'task'``.
            Defaults to ``'sd'``.
        scopes (Sequence[str]): Module names (or globs) whose Conv/Linear
            weights are prunable. Defaults to ``('backbone',)``.
        num_batches (int): Batches drawn for scoring; prospr takes one inner
            step per batch and cycles if it needs more. Ignored by data-free
            criteria. Defaults to 4.
        selection (str): ``'global'`` top-k over all layers or
            ``'layerwise'``. Defaults to ``'global'``.
        min_density (float): Floor of kept weights per layer; 0 raises an
            error when a layer would be fully pruned. Defaults to 0.
    """

    def __init__(self,
                 sparsity: float = 0.9,
                 criterion: str = 'prospr',
                 criterion_cfg: Optional[dict] = None,
                 loss: str = 'sd',
                 scopes: Union[str, Sequence[str]] = ('backbone', ),
                 num_batches: int = 4,
                 selection: str = 'global',
                 min_density: float = 0.0) -> None:
        super().__init__()
        if not 0 <= sparsity < 1:
            raise ValueError(
                f'EarlyPruningHook: sparsity must be in [0, 1), got '
                f'{sparsity}. It is the fraction of prunable weights set to '
                'zero, e.g. sparsity=0.9 keeps 10%.')
        if criterion not in SCORERS:
            raise ValueError(
                f'EarlyPruningHook: unknown criterion {criterion!r}; choose '
                f'one of {sorted(SCORERS)}.')
        if loss not in SCORING_LOSSES:
            raise ValueError(
                f"EarlyPruningHook: loss must be 'sd' (EPSD) or 'task' "
                f'(simple combination), got {loss!r}.')
        if num_batches < 0 or (num_batches == 0
                               and criterion not in DATA_FREE):
            raise ValueError(
                f'EarlyPruningHook: criterion {criterion!r} needs '
                f'num_batches >= 1, got {num_batches}.')
        if criterion_cfg is None:
            criterion_cfg = (
                dict(num_steps=3, lr=0.1, first_order=False)
                if criterion == 'prospr' else {})
        self.sparsity = sparsity
        self.criterion = criterion
        self.criterion_cfg = dict(criterion_cfg)
        self.loss = loss
        self.scopes = (scopes, ) if isinstance(scopes, str) else tuple(scopes)
        self.num_batches = num_batches if criterion not in DATA_FREE else 0
        self.selection = selection
        self.min_density = min_density

    # Validation before any checkpoint exists ---------------------------
    def before_run(self, runner) -> None:
        model = unwrap_model(runner.model)
        prunable_parameters(model, self.scopes)  # raises on an empty scope
        if self.loss == 'sd' and getattr(model, 'sd_loss', None) is None:
            raise ValueError(
                "EarlyPruningHook(loss='sd') scores with the model's "
                f'self-distillation loss, but {type(model).__name__} has no '
                "`sd_loss`. Configure model.sd_loss (e.g. dict(type='DLBLoss'"
                ")) or score with loss='task'.")

    # Pruning -----------------------------------------------------------
    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if get_masks(model):
            runner.logger.info(
                'EarlyPruningHook: masks restored from the checkpoint; '
                'not re-scoring.')
        else:
            self._prune(runner, model)
        self.log_sparsity(runner)
        self.enforce(runner)

    def _prune(self, runner, model: nn.Module) -> None:
        params = prunable_parameters(model, self.scopes)
        batches = self._draw_batches(runner, model, self.num_batches)
        kwargs = dict(self.criterion_cfg)
        if self.criterion == 'synflow':
            kwargs = self._synflow_kwargs(runner, model, kwargs)
        runner.logger.info(
            f'EarlyPruningHook: scoring {len(params)} layers with '
            f'{self.criterion} on the {self.loss} loss '
            f'({len(batches)} batches, {self.criterion_cfg}).')
        with _scoring_state(model, self.loss):
            scores = compute_scores(
                model,
                self._loss_fn(model, runner.rank == 0),
                batches,
                criterion=self.criterion,
                params=params,
                **kwargs)
        if runner.rank == 0:
            print()  # end the progress line
        for score in scores.values():
            dist.all_reduce(score, op='mean')  # no-op when not distributed
        self._warn_zero_scores(runner, scores)
        masks = select_masks(
            scores,
            self.sparsity,
            selection=self.selection,
            min_density=self.min_density)
        # Ties or per-rank randomness must not split the ranks' masks.
        for mask in masks.values():
            dist.broadcast(mask, src=0)  # no-op when not distributed
        apply_masks(model, masks)

    def _warn_zero_scores(self, runner, scores: Dict[str, Tensor]) -> None:
        """Layers scored all zero are cut by tie order, not by merit."""
        if self.criterion == 'random':
            return
        dead = [name for name, score in scores.items() if not score.any()]
        if dead:
            runner.logger.warning(
                f'EarlyPruningHook: {len(dead)} layers score exactly 0 under '
                f'{self.criterion}, so their masks follow tie order: '
                f'{", ".join(dead[:6])}{" ..." if len(dead) > 6 else ""}. '
                'A common cause is zero-initialised residual BN layers at '
                'random init: set backbone.zero_init_residual=False, or use '
                "criterion='prospr', whose inner steps revive them.")

    def _synflow_kwargs(self, runner, model: nn.Module, kwargs: dict) -> dict:
        """SynFlow runs the network on an all-ones input of one sample's
        shape (from one train batch unless ``input_shape`` is given) and, for
        iterative rounds, needs the target sparsity."""
        if 'input_shape' not in kwargs:
            inputs = self._draw_batches(runner, model, 1)[0]['inputs']
            kwargs['input_shape'] = (1, ) + tuple(inputs.shape[1:])
        kwargs.setdefault('forward_fn', lambda m, x: m(x, mode='tensor'))
        kwargs.setdefault('sparsity', self.sparsity)
        return kwargs

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

    def _loss_fn(self, model: nn.Module,
                 show_progress: bool) -> Callable[[nn.Module, dict], Tensor]:
        progress = ProgressBar(0) if show_progress else None

        def loss_fn(module: nn.Module, batch: dict) -> Tensor:
            loss = model_loss(module, batch)
            if progress is not None:
                progress.update()
            return loss

        return loss_fn


@contextmanager
def _scoring_state(model: nn.Module, loss: str) -> Iterator[None]:
    """Put a self-distilling model in its scoring state and restore it.

    ``loss='task'`` switches the SD term off. PS-KD gets the network at the
    start of scoring as teacher and its final strength (progress 1). DLB's
    previous batch is cleared before and after, so training starts clean.
    """
    if not hasattr(model, 'sd_enabled'):  # a plain MMEngine model
        yield
        return
    progress, teacher = model.sd_progress, model.sd_teacher
    model.reset_sd_state()
    with (model.sd_disabled() if loss == 'task' else nullcontext()):
        if model.sd_enabled and model.sd_method == 'pskd':
            model.sd_progress = 1.0
            model.set_sd_teacher(model.sd_snapshot())
        try:
            yield
        finally:
            model.sd_progress = progress
            model.set_sd_teacher(teacher)
            model.reset_sd_state()
