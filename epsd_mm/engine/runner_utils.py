"""What the pruning hooks need from a Runner, besides the pruning core.

Drawing batches the way the train loop does, averaging and broadcasting
over ranks, pointing optimizers and the DDP wrapper at replaced
parameters, and logging scoring progress.
"""
import copy
import time
from typing import List, Mapping, Optional

from mmengine import dist
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner import BaseLoop
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from epsd_mm.pruning import rebind_optimizer


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP/FSDP wrapper."""
    return model.module if is_model_wrapper(model) else model


def is_training_run(runner) -> bool:
    """Whether the runner was started with ``train()``: only then is its
    train loop built before ``before_run`` (``test()`` and ``val()`` leave
    it a config, and building it would load the training data)."""
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def reduce_mean(tensor: Tensor) -> None:
    """Average ``tensor`` over ranks in place (no-op in one process)."""
    dist.all_reduce(tensor, op='mean')


def broadcast_from_rank0(tensor: Tensor) -> None:
    """Copy rank 0's ``tensor`` to every rank in place (no-op in one
    process)."""
    dist.broadcast(tensor, src=0)


def draw_batches(runner, num_batches: int, who: str) -> List[dict]:
    """Preprocessed batches drawn the way the train loop draws them.

    Iteration-based loops share their (infinite) iterator: a second
    iterator over an ``InfiniteSampler`` would close its shared index
    generator and end the training loop.

    Args:
        runner (Runner): The runner (in ``before_train`` or later).
        num_batches (int): How many; 0 draws nothing.
        who (str): The hook drawing them, for the error message.

    Returns:
        list[dict]: ``model.data_preprocessor(data, training=True)`` of
        each batch.
    """
    if num_batches == 0:
        return []
    model = unwrap_model(runner.model)
    loop = runner.train_loop
    stream = getattr(loop, 'dataloader_iterator', None) or iter(
        loop.dataloader)
    batches = []
    for data in stream:
        batches.append(model.data_preprocessor(data, training=True))
        if len(batches) == num_batches:
            return batches
    raise ValueError(
        f'{who}: the train dataloader yielded only {len(batches)} batches '
        f'but num_batches={num_batches}. Lower num_batches, or use more '
        'data / drop_last=False.')


def rebind_runner(runner, before: Mapping[str, Tensor]) -> None:
    """Point the runner's optimizers and DDP wrapper at replaced parameters.

    Channel pruning replaces the ``nn.Parameter`` objects of the changed
    layers; the optimizer (built before ``before_train`` and before a
    checkpoint loads) and the DDP wrapper (built with the Runner) still hold
    the old ones. Call this before the first optimizer step, and before
    MMEngine loads a checkpoint's optimizer state.

    Args:
        runner (Runner): The runner.
        before (Mapping[str, Tensor]): ``dict(model.named_parameters())``
            of the unwrapped model, taken before the parameters changed.
    """
    model = unwrap_model(runner.model)
    optim_wrapper = runner.optim_wrapper
    if isinstance(optim_wrapper, OptimWrapperDict):
        wrappers = list(optim_wrapper.values())
    elif isinstance(optim_wrapper, OptimWrapper):
        wrappers = [optim_wrapper]
    else:  # not built yet (test/val runs): it will bind the new model
        wrappers = []
    for wrapper in wrappers:
        rebind_optimizer(wrapper.optimizer, before, model)
    if is_model_wrapper(runner.model):
        if not isinstance(runner.model, DistributedDataParallel):
            raise TypeError(
                'channel pruning replaces parameters, so the model wrapper '
                'must be rebuilt; this works for (MM)DistributedDataParallel,'
                f' not for {type(runner.model).__name__}. Use '
                "model_wrapper_cfg=dict(type='MMDistributedDataParallel') or "
                'weight pruning.')
        # DDP's reducer holds the old parameters: wrap the model anew (its
        # constructor broadcasts rank 0's weights, identical already).
        runner.model = runner.wrap_model(
            copy.deepcopy(runner.cfg.get('model_wrapper_cfg')), model)


class ScoringProgress:
    """Progress of a scoring run, as log lines with an ETA.

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

    @classmethod
    def on_rank0(cls, runner, prefix: str) -> Optional['ScoringProgress']:
        """A progress logger on rank 0, None on the other ranks."""
        return cls(runner.logger, prefix) if runner.rank == 0 else None
