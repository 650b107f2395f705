"""Keep scores that selection refused, so a rerun does not score again.

Scoring is the expensive part of pruning (minutes to hours for ProsPr on a
large model); selection is instant. When selection refuses the scores (a
layer would collapse, floors exceed the budget), the fix is a changed
selection argument and a rerun, which would score again. A
:class:`ScoreCache` stores such scores under a key of everything they
depend on (model state, batches, criterion and its options, scopes, the
random state, and a caller's tag such as the scoring loss), together with
the random state scoring left behind, so that the rerun continues exactly
as a fresh run would.
"""
import hashlib
import os
import os.path as osp
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
from torch import Tensor, nn


def _update(digest: Any, obj: Any, depth: int = 0) -> None:
    """Feed a structure of tensors, arrays, containers and plain values into
    a hash, recursing into objects' attributes (e.g. MMEngine data
    samples)."""
    if depth > 20:
        raise ValueError('structure too deep to fingerprint')
    if isinstance(obj, Tensor):
        digest.update(f'T{obj.dtype}{tuple(obj.shape)}'.encode())
        digest.update(obj.detach().cpu().contiguous().view(-1).view(
            torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        digest.update(f'A{obj.dtype}{obj.shape}'.encode())
        digest.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode())
            _update(digest, obj[key], depth + 1)
    elif isinstance(obj, (list, tuple)):
        digest.update(f'L{len(obj)}'.encode())
        for item in obj:
            _update(digest, item, depth + 1)
    elif isinstance(obj, (set, frozenset)):
        digest.update(repr(sorted(map(repr, obj))).encode())
    elif obj is None or isinstance(obj, (str, int, float, bool, complex)):
        digest.update(repr(obj).encode())
    elif hasattr(obj, '__dict__'):
        digest.update(type(obj).__qualname__.encode())
        _update(digest, vars(obj), depth + 1)
    else:
        digest.update(repr(obj).encode())


def fingerprint(*parts: Any) -> str:
    """A hex digest of ``parts`` (tensors by their bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()[:32]


def model_fingerprint(model: nn.Module) -> str:
    """A digest of a model's parameters and buffers (masks included)."""
    return fingerprint(dict(model.state_dict(keep_vars=False)))


def rng_state() -> Dict[str, Any]:
    """The current random state (CPU and initialised CUDA devices)."""
    state = {'cpu': torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['cpu'])
    if 'cuda' in state and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(state['cuda'])


class ScoreCache:
    """Scores on disk, keyed by what determines them.

    Args:
        directory (str): Where the score files live (created on first
            write).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def key(self, model: nn.Module, batches: Optional[Iterable[Any]],
            *extra: Any) -> str:
        """The key of scoring ``model`` on ``batches`` now.

        Args:
            model (nn.Module): The model about to be scored.
            batches (Iterable, optional): The scoring batches.
            *extra: Anything else the scores depend on (criterion and
                options, scopes, granularity, the scoring loss, ...).

        Returns:
            str: The key.
        """
        return fingerprint(
            model_fingerprint(model), list(batches or ()), extra,
            torch.get_rng_state())

    def path(self, key: str) -> str:
        """The file of ``key``."""
        return osp.join(self.directory, f'scores_{key}.pt')

    def __contains__(self, key: str) -> bool:
        return osp.isfile(self.path(key))

    def load(self, key: str) -> Dict[str, Tensor]:
        """The scores stored under ``key``; the random state is set to what
        it was after they were computed."""
        content = torch.load(
            self.path(key), map_location='cpu', weights_only=True)
        _set_rng_state(content['rng'])
        return content['scores']

    def save(self, key: str, scores: Dict[str, Tensor],
             rng: Dict[str, Any]) -> str:
        """Store ``scores`` and the random state after scoring (``rng``,
        from :func:`rng_state`) under ``key``.

        Returns:
            str: The file written.
        """
        os.makedirs(self.directory, exist_ok=True)
        path = self.path(key)
        tmp = path + '.tmp'
        torch.save(
            dict(scores={k: v.detach().cpu()
                         for k, v in scores.items()}, rng=rng), tmp)
        os.replace(tmp, path)
        return path

    def remove(self, key: str) -> None:
        """Drop the scores of ``key`` (once they led to a pruned model)."""
        if key in self:
            os.remove(self.path(key))
