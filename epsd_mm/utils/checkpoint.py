"""Let torch's ``weights_only`` loader read MMEngine checkpoints.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and refuses
every global it does not know. MMEngine 0.10.7 checkpoints hold the message
hub's ``HistoryBuffer`` objects (numpy arrays and numpy scalars inside, and the
buffer's statistics methods, which pickle as ``getattr(HistoryBuffer, 'min')``).
We allow-list exactly those globals instead of loading with
``weights_only=False``: the restricted unpickler still refuses to *call*
anything outside the allow-list, so ``getattr`` can only fetch attributes.
"""
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# numpy scalar dtypes the message hub stores (losses, lr, eta, counts).
_NUMPY_DTYPE_NAMES = ('Float64DType', 'Float32DType', 'Float16DType',
                      'Int64DType', 'Int32DType', 'Int16DType', 'Int8DType',
                      'UInt64DType', 'UInt32DType', 'UInt16DType',
                      'UInt8DType', 'BoolDType')


def checkpoint_safe_globals() -> List[object]:
    """The globals an MMEngine checkpoint needs beyond torch's defaults."""
    try:  # numpy >= 2 moved the private module
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - depends on the numpy version
        from numpy.core import multiarray
    safe = [
        HistoryBuffer, getattr, multiarray._reconstruct, multiarray.scalar,
        np.ndarray, np.dtype
    ]
    safe += [
        getattr(np.dtypes, name) for name in _NUMPY_DTYPE_NAMES
        if hasattr(np.dtypes, name)
    ]
    return safe


def register_checkpoint_safe_globals() -> None:
    """Add :func:`checkpoint_safe_globals` to torch's allow-list
    (idempotent)."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
