"""Let torch's ``weights_only`` loader read MMEngine checkpoints.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and refuses
every global it does not know. MMEngine 0.10.7 checkpoints hold the message
hub's ``HistoryBuffer`` objects (numpy arrays and numpy scalars inside, and the
buffer's statistics methods, which pickle as ``getattr(HistoryBuffer, 'min')``).
We allow-list exactly those globals instead of loading with
``weights_only=False``: the restricted unpickler still refuses to *call*
anything outside the allow-list, so ``getattr`` can only fetch attributes.

numpy arrays and scalars pickle through ``multiarray._reconstruct`` and
``multiarray.scalar``, named after the module numpy keeps them in: numpy 1.x
writes ``numpy.core.multiarray``, numpy 2.x ``numpy._core.multiarray``.
numpy 1.26 also has a ``numpy._core`` shim, so either name can appear in a
checkpoint whoever wrote it. The allow-list maps *both* names to the running
numpy's functions, so checkpoints load across the numpy 1 <-> 2 switch in
both directions (the functions and their arguments are the same in both).

The list is registered process-wide because MMEngine's own resume and
``load_from`` call ``torch.load`` themselves; scoping it to our calls would
leave those failing. It is registered when a Runner builds one of our hooks
(importing :mod:`epsd_mm.engine`) and by our tools, never by a bare
``import epsd_mm``. It widens torch's allow-list by exactly these objects:
``getattr`` lets a pickle read attributes, but the unpickler only *calls*
allow-listed callables, so nothing outside the list can run.
"""
from typing import List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# numpy scalar dtypes the message hub stores (losses, lr, eta, counts).
_NUMPY_DTYPE_NAMES = ('Float64DType', 'Float32DType', 'Float16DType',
                      'Int64DType', 'Int32DType', 'Int16DType', 'Int8DType',
                      'UInt64DType', 'UInt32DType', 'UInt16DType',
                      'UInt8DType', 'BoolDType')
#: Where numpy 1.x (first) and 2.x (second) keep ``multiarray``.
NUMPY_MULTIARRAY_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')
#: The ``multiarray`` functions numpy pickles name.
_MULTIARRAY_FUNCTIONS = ('_reconstruct', 'scalar')

#: An allow-list entry: an object, or ``(object, 'module.qualname')`` to
#: allow it under a name other than its own.
SafeGlobal = Union[object, Tuple[object, str]]


def _multiarray():
    """The running numpy's ``multiarray`` module."""
    try:  # numpy >= 2 (and the numpy 1.26 shim)
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    return multiarray


def checkpoint_safe_globals() -> List[SafeGlobal]:
    """The globals an MMEngine checkpoint needs beyond torch's defaults.

    Returns:
        list: Objects and ``(object, 'module.qualname')`` pairs for
        :func:`torch.serialization.add_safe_globals`. The numpy
        ``multiarray`` functions appear under both the numpy 1 and numpy 2
        module path.
    """
    multiarray = _multiarray()
    safe: List[SafeGlobal] = [HistoryBuffer, getattr, np.ndarray, np.dtype]
    safe += [(getattr(multiarray, function), f'{module}.{function}')
             for module in NUMPY_MULTIARRAY_MODULES
             for function in _MULTIARRAY_FUNCTIONS]
    safe += [
        getattr(np.dtypes, name) for name in _NUMPY_DTYPE_NAMES
        if hasattr(np.dtypes, name)
    ]
    return safe


def register_checkpoint_safe_globals() -> None:
    """Add :func:`checkpoint_safe_globals` to torch's allow-list
    (idempotent)."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
