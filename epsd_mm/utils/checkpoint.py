"""Let torch's ``weights_only`` loader read MMEngine checkpoints, and refuse
unreadable checkpoint files with one clear message
(:func:`load_checkpoint_file`).

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
leave those failing. It is registered on ``import epsd_mm`` (users call
``mmseg.apis.init_model`` right after it), by a Runner building one of our
hooks and by our tools. It widens torch's allow-list by exactly these objects:
``getattr`` lets a pickle read attributes, but the unpickler only *calls*
allow-listed callables, so nothing outside the list can run.
"""
import os.path as osp
import pickle
import zipfile
from typing import Any, Callable, List, Optional, Tuple, Union

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


#: The first bytes of a checkpoint in torch's legacy (non-zip) format: the
#: pickled magic number ``torch.save`` wrote before torch 1.6.
_LEGACY_MAGIC = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)[:13]
#: What the fix-it message of an unreadable checkpoint suggests by default.
DEFAULT_CHECKPOINT_FIX = (
    'a checkpoint cut short while it was written or copied is the usual '
    'cause: copy it again, or use another one (e.g. an earlier iter_*.pth '
    'of the work_dir)')


def _unreadable(path: str, reason: str, fix: str) -> ValueError:
    return ValueError(
        f'{path} is not a readable checkpoint (truncated or not a torch '
        f'file: {reason}); {fix}')


def check_checkpoint_file(path: str,
                          fix: str = DEFAULT_CHECKPOINT_FIX) -> None:
    """Refuse a file ``torch.load`` cannot read, without loading it.

    Reads the zip central directory of the (torch >= 1.6) format, which a
    truncated file lacks, or the magic number of the legacy format; the
    tensor data is not read.

    Args:
        path (str): The checkpoint file.
        fix (str): How to fix it, appended to the error message.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: It is neither a torch zip archive with its central
            directory nor a legacy torch file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise _unreadable(path, f'broken zip archive: {err}', fix) from err
        if not any(name.endswith('data.pkl') for name in names):
            raise _unreadable(path, 'a zip archive without data.pkl', fix)
        return
    with open(path, 'rb') as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head != _LEGACY_MAGIC:
        size = osp.getsize(path)
        reason = ('empty file' if size == 0 else
                  f'{size} bytes without the end of a zip archive')
        raise _unreadable(path, reason, fix)


def load_checkpoint_file(path: str,
                         load: Optional[Callable[[str], Any]] = None,
                         fix: str = DEFAULT_CHECKPOINT_FIX) -> Any:
    """Load a checkpoint, turning an unreadable file into one clear error.

    Without this, a truncated file fails inside torch with ``failed
    finding central directory`` and a foreign one with a pickle,
    ``UnicodeDecodeError`` or ``KeyError`` traceback.

    Args:
        path (str): The checkpoint file.
        load (Callable, optional): ``load(path)``, e.g. MMEngine's
            ``CheckpointLoader.load_checkpoint``. Defaults to
            ``torch.load(path, map_location='cpu')`` with the allow-list of
            :func:`register_checkpoint_safe_globals`.
        fix (str): How to fix it, appended to the error message.

    Returns:
        Any: What ``load`` returned.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is truncated, damaged or not a torch file.
    """
    check_checkpoint_file(path, fix)
    register_checkpoint_safe_globals()
    if load is None:
        load = _torch_load
    try:
        return load(path)
    except pickle.UnpicklingError as err:
        if 'Unsupported global' in str(err):
            raise  # a readable file holding objects outside the allow-list
        raise _unreadable(path, _first_line(err), fix) from err
    except (RuntimeError, EOFError, UnicodeDecodeError, KeyError,
            zipfile.BadZipFile, ValueError) as err:
        raise _unreadable(path, _first_line(err), fix) from err


def _torch_load(path: str) -> Any:
    return torch.load(path, map_location='cpu', weights_only=True)


def _first_line(err: BaseException) -> str:
    """The exception's type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f'{type(err).__name__}: {lines[0] if lines else repr(err)}'
