"""From a pruned training checkpoint to files a user can ship.

:func:`export_pruned_checkpoint` checks everything first (output directory,
masks, config against checkpoint, folded against masked outputs) and only
then writes:

* ``folded.pth``: a plain MMEngine checkpoint of the deployed network (masks
  multiplied in, no mask buffers, no self-distillation state; a
  channel-pruned network keeps its slim tensors);
* ``deploy_config.py``: the config of that network (see
  :func:`~epsd_mm.deploy.deploy_config`);
* ``sparse.pth``: the same weights, pruned tensors as bitmask plus values
  (read with :func:`~epsd_mm.deploy.load_sparse_checkpoint`);
* ``model.onnx`` (optional): the tensor-mode network, checked against
  PyTorch with onnxruntime;
* ``model_int8.onnx`` (optional, with ``model.onnx``): the same network
  statically quantized to int8 by onnxruntime, calibrated on images drawn
  through the config's own dataloader (see
  :mod:`~epsd_mm.deploy.quantize`).
"""
import io
import os
import os.path as osp
import shutil
import itertools
import tempfile
import time
from collections import OrderedDict
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
from mmengine.config import Config
from torch import Tensor, nn

from epsd_mm.pruning import PruningRecord, to_plain
from .checkpoint import (build_masked_model, build_model,
                         check_state_dict_fits, load_checkpoint_dict,
                         pruning_meta)
from .config import deploy_config, input_shape_from_cfg
from .fold import fold_masks
from .onnx_export import TensorModeModel, export_onnx, onnx_max_abs_diff
from .quantize import (QuantizeReport, build_eval_dataloader,
                       calibration_batches, calibration_dataloader_cfg,
                       quantize_int8)
from .sparse import (SparseSummary, identical_state_dicts,
                     load_sparse_checkpoint, save_sparse_checkpoint)

FOLDED = 'folded.pth'
SPARSE = 'sparse.pth'
CONFIG = 'deploy_config.py'
ONNX = 'model.onnx'
ONNX_INT8 = 'model_int8.onnx'

_CONFIG_HEADER = (
    '# Deploy config written by tools/deploy/export.py from {source}.\n'
    '# The trained network without pruning/self-distillation hooks and\n'
    '# wrappers; load it with {folded}, e.g.\n'
    '#   mmseg.apis.init_model(this_file, {folded})\n'
    '#   mmdet.apis.init_detector(this_file, {folded})  (CAM localiser)\n'
    '# Changes from the training config:\n{changes}\n')


class ExportResult(NamedTuple):
    """What :func:`export_pruned_checkpoint` wrote and checked.

    Attributes:
        files (list[tuple[str, int]]): Path and size in bytes of every file
            written.
        dense_bytes (int): Size of ``folded.pth`` for the dense network
            (for a channel-pruned one, the dense architecture saved the same
            way; otherwise ``folded.pth``'s own size).
        sparse (SparseSummary): Bytes of the pruned tensors, dense and
            in ``sparse.pth``.
        logits_diff (float): Max abs difference between the masked and the
            folded model's outputs.
        onnx_diff (float, optional): Max abs difference between onnxruntime
            and PyTorch, if ONNX was exported.
        meta (dict): The pruning record stored in the checkpoints.
        changes (list[str]): What the deploy config changed, and state
            dropped from the checkpoint.
        int8 (QuantizeReport, optional): The int8 quantization's report,
            if ``model_int8.onnx`` was written.
    """
    files: List[Tuple[str, int]]
    dense_bytes: int
    sparse: SparseSummary
    logits_diff: float
    onnx_diff: Optional[float]
    meta: dict
    changes: List[str]
    int8: Optional[QuantizeReport] = None


def check_out_dir(out_dir: str, force: bool) -> None:
    """Refuse an output directory holding files, unless ``force``.

    Args:
        out_dir (str): The output directory.
        force (bool): Whether files in it may be overwritten.
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(
            f'--out-dir {out_dir} is a file; pass a directory')
    if osp.isdir(out_dir) and os.listdir(out_dir) and not force:
        present = ', '.join(sorted(os.listdir(out_dir))[:5])
        raise FileExistsError(
            f'--out-dir {out_dir} already holds files ({present}); choose a '
            'new directory, or pass --force to overwrite them')


@torch.no_grad()
def _max_abs_diff(first: nn.Module, second: nn.Module,
                  inputs: Tensor) -> float:
    a = TensorModeModel(first)(inputs)
    b = TensorModeModel(second)(inputs)
    return float((a - b).abs().max())


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _saved_bytes(obj: dict) -> int:
    """Bytes ``torch.save`` writes for ``obj``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def _folded_meta(checkpoint: dict, deploy_cfg: Config, pruning: dict) -> dict:
    """The training meta (plain values only), the deploy config, the
    measured ``pruning`` summary and the pruning record without the hooks'
    tensors."""
    record = PruningRecord.from_checkpoint(checkpoint)
    meta = {k: v for k, v in checkpoint.get('meta', {}).items() if k != 'cfg'}
    folded = dict(meta=to_plain(meta))
    PruningRecord(record.stages, record.slim_spec).write(folded)
    folded['meta'].update(
        cfg=deploy_cfg.pretty_text,
        pruning=pruning,
        exported_at=time.strftime('%Y%m%d_%H%M%S'))
    return folded['meta']


def _check_int8_args(cfg: Config, onnx: bool, calib_num: int,
                     calib_split: str) -> None:
    """Refuse int8 arguments that cannot work, before anything is
    loaded or written."""
    if not onnx:
        raise ValueError('int8=True quantizes the exported model.onnx; pass '
                         'onnx=True too (tools/deploy/export.py: --int8 '
                         'implies --onnx)')
    if calib_num < 1:
        raise ValueError(f'--calib-num {calib_num} (calib_num): int8 '
                         'calibration needs at least one image; pass 1 or '
                         'more (default 32)')
    try:
        import onnx as _onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError as error:
        raise ImportError(f'int8 export needs onnx and onnxruntime ({error}); '
                          'pip install onnx onnxruntime') from None
    calibration_dataloader_cfg(cfg, calib_split)


#: Test images whose preprocessed size decides the ONNX input size.
SHAPE_PROBE = 8


def onnx_input_shape(cfg: Config,
                     model: nn.Module,
                     log: Callable[[str], None] = print) -> Tuple[int, int]:
    """The fixed input ``(H, W)`` of an ONNX export when none is given: the
    size ``cfg.test_dataloader`` feeds the network (its first
    :data:`SHAPE_PROBE` images through the pipeline and ``model``'s data
    preprocessor) when they share one, so that
    ``tools/deploy/test_onnx.py`` can evaluate the file; else the config's
    crop size or fixed test ``Resize``
    (:func:`~epsd_mm.deploy.config.input_shape_from_cfg`). Logs which and
    why.

    Args:
        cfg (Config): The training config.
        model (nn.Module): The built model (its data preprocessor).
        log (Callable[[str], None]): Where the choice is said. Defaults to
            print.

    Returns:
        tuple[int, int]: Height and width.
    """
    try:
        loader = build_eval_dataloader(cfg, 'test')
        sizes = sorted({
            tuple(model.data_preprocessor(data, False)['inputs'].shape[-2:])
            for data in itertools.islice(loader, SHAPE_PROBE)
        })
        if len(sizes) == 1:
            height, width = sizes[0]
            log(f'ONNX input size {height}x{width}: what `test_dataloader` '
                f'gives (its first images, up to {SHAPE_PROBE}); --shape H W '
                'for another')
            return int(height), int(width)
        reason = ('the test images come in several sizes (' +
                  ', '.join(f'{h}x{w}' for h, w in sizes[:4]) + ')'
                  if sizes else 'the test set is empty')
    except Exception as error:  # noqa: BLE001  said below, not hidden
        first_line = str(error).split('\n')[0]
        reason = (f'the test data could not be read ({type(error).__name__}:'
                  f' {first_line})')
    shape = input_shape_from_cfg(cfg)
    log(f'ONNX input size {shape[0]}x{shape[1]} (the config\'s crop size or '
        f'fixed test Resize), as {reason}. tools/deploy/test_onnx.py feeds '
        'the test pipeline\'s images: give --shape H W of their size, or '
        'evaluate with slide inference whose crop is this size')
    return shape


def export_pruned_checkpoint(
        cfg: Config,
        checkpoint: str,
        out_dir: str,
        shape: Optional[Tuple[int, int]] = None,
        onnx: bool = False,
        force: bool = False,
        atol: float = 1e-5,
        onnx_atol: float = 1e-4,
        int8: bool = False,
        calib_num: int = 32,
        calib_split: str = 'val',
        log: Callable[[str], None] = print) -> ExportResult:
    """Export a pruned checkpoint to folded, sparse (and ONNX) files.

    Args:
        cfg (Config): The config the checkpoint was trained with.
        checkpoint (str): The pruned training checkpoint.
        out_dir (str): Where to write; must be empty or new unless
            ``force``.
        shape (tuple[int, int], optional): Input ``(H, W)`` for the output
            checks and ONNX. Defaults to None: with ``onnx``, the size the
            test pipeline gives (:func:`onnx_input_shape`), else the
            config's (:func:`~epsd_mm.deploy.config.input_shape_from_cfg`).
        onnx (bool): Also write and check ``model.onnx``; then a dense
            checkpoint (no masks, no slim spec) is exported too. Defaults
            to False.
        force (bool): Overwrite files in ``out_dir``. Defaults to False.
        atol (float): Largest accepted difference between the masked and
            the folded model's outputs. Defaults to 1e-5.
        onnx_atol (float): Largest accepted difference between onnxruntime
            and PyTorch. Defaults to 1e-4.
        int8 (bool): Also write ``model_int8.onnx``, statically quantized
            with onnxruntime (needs ``onnx=True``). The calibration images
            are drawn (before anything is written) through the config's
            ``<calib_split>_dataloader`` and the model's data preprocessor,
            and resized (bilinear) to ``shape`` where their preprocessed size
            differs. Defaults to False.
        calib_num (int): Number of calibration images. Defaults to 32.
        calib_split (str): ``'val'`` or ``'test'``: the dataloader drawn
            from. Defaults to ``'val'``.
        log (Callable[[str], None]): Progress messages. Defaults to print.

    Returns:
        ExportResult: The files written and the checks.
    """
    check_out_dir(out_dir, force)
    if int8:
        _check_int8_args(cfg, onnx, calib_num, calib_split)
    if shape:
        shape = tuple(shape)
    elif not onnx:
        shape = input_shape_from_cfg(cfg)
    ckpt = load_checkpoint_dict(checkpoint)
    slim_spec = PruningRecord.from_checkpoint(ckpt).slim_spec
    try:
        # A dense checkpoint is worth shipping as ONNX (the baseline of the
        # pruned one, or int8 alone), not as folded / sparse copies of itself.
        folded_all, masks = fold_masks(
            ckpt['state_dict'], require_masks=slim_spec is None and not onnx)
    except ValueError as error:
        raise ValueError(
            f'{checkpoint}: {error} To export a dense model as ONNX (e.g. as '
            'the baseline of a pruned one), add --onnx.') from None
    if not masks and slim_spec is None:
        log(f'{checkpoint} is dense (no masks, no slim spec): exported as '
            'trained; the folded and sparse files hold it unchanged')
    masked = build_masked_model(cfg, ckpt['state_dict'], checkpoint,
                                slim_spec)

    deploy_cfg, changes = deploy_config(cfg, slim_spec)
    plain = build_model(deploy_cfg)
    dense = plain if slim_spec is None else build_model(deploy_config(cfg)[0])
    if slim_spec is not None:
        log(f'slim network: {_num_params(plain):,} parameters, '
            f'{_num_params(dense):,} dense '
            f'({_num_params(plain) / _num_params(dense):.3f}x)')
    keys = list(plain.state_dict())
    changes += [
        f'dropped {key} (not part of the deployed network)'
        for key in folded_all if key not in set(keys)
    ]
    kept = OrderedDict((k, folded_all[k]) for k in keys if k in folded_all)
    check_state_dict_fits(
        plain,
        kept,
        f'the folded {checkpoint}',
        'the deploy config',
        hint='The deploy config does not describe the trained network; '
        'please report this with both configs.')
    plain.load_state_dict(kept)

    if shape is None:
        shape = onnx_input_shape(cfg, plain, log)
    inputs = torch.randn(
        1, 3, *shape, generator=torch.Generator().manual_seed(0))
    logits_diff = _max_abs_diff(masked, plain, inputs)
    log(f'folded vs masked model outputs on a {shape[0]}x{shape[1]} input: '
        f'max abs diff {logits_diff:.2e} (tolerance {atol:.0e})')
    if logits_diff > atol:
        raise RuntimeError(
            'the folded model differs from the masked one by '
            f'{logits_diff:.2e} > {atol:.0e}; nothing was written. Check that '
            'the config is the one the checkpoint was trained with.')

    batches = None
    if int8:
        log(f'int8 calibration: drawing {calib_num} images through '
            f'`{calib_split}_dataloader` (resized to {shape[0]}x{shape[1]} '
            'where the pipeline gives another size)')
        batches = calibration_batches(
            cfg, plain, calib_num, calib_split, shape, log=log)

    pruning = pruning_meta(ckpt, masks, checkpoint)
    meta = _folded_meta(ckpt, deploy_cfg, pruning)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        name: osp.join(out_dir, name)
        for name in (FOLDED, CONFIG, SPARSE, ONNX, ONNX_INT8)
    }
    with open(paths[CONFIG], 'w', encoding='utf-8') as f:
        f.write(
            _CONFIG_HEADER.format(
                source=osp.basename(checkpoint),
                folded=FOLDED,
                changes='\n'.join(f'#   {c}'
                                  for c in changes)) + deploy_cfg.pretty_text)
    torch.save(dict(meta=meta, state_dict=kept), paths[FOLDED])
    dense_bytes = (
        osp.getsize(paths[FOLDED]) if dense is plain else _saved_bytes(
            dict(meta=meta, state_dict=dense.state_dict())))
    sparse_masks = {k: m for k, m in masks.items() if k in kept}
    summary = save_sparse_checkpoint(paths[SPARSE], kept, sparse_masks, meta)
    if not identical_state_dicts(load_sparse_checkpoint(paths[SPARSE]), kept):
        raise RuntimeError(f'{paths[SPARSE]} does not decode to the folded '
                           'state dict; please report this.')
    log(f'{SPARSE} decodes to {FOLDED} bit for bit; ' +
        (f'pruned tensors take {summary.ratio:.3f}x their dense bytes'
         if summary.num_sparse else 'no masked tensors (all stored dense)'))
    written = [paths[FOLDED], paths[SPARSE], paths[CONFIG]]

    onnx_diff = int8_report = None
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = osp.join(tmp, ONNX)
            export_onnx(plain, inputs, tmp_path)
            onnx_diff = onnx_max_abs_diff(tmp_path, plain, inputs)
            log(f'ONNX check (onnxruntime vs PyTorch, {shape[0]}x{shape[1]}):'
                f' max abs diff {onnx_diff:.2e} (tolerance {onnx_atol:.0e}) '
                f'{"OK" if onnx_diff <= onnx_atol else "FAILED"}')
            if onnx_diff > onnx_atol:
                raise RuntimeError(
                    f'onnxruntime differs from PyTorch by {onnx_diff:.2e} > '
                    f'{onnx_atol:.0e}; {ONNX} was not written.')
            if int8:
                int8_path = osp.join(tmp, ONNX_INT8)
                int8_report = quantize_int8(tmp_path, int8_path, batches)
                log(int8_report.summary())
            shutil.move(tmp_path, paths[ONNX])
            written.append(paths[ONNX])
            if int8:
                shutil.move(int8_path, paths[ONNX_INT8])
                written.append(paths[ONNX_INT8])
    return ExportResult([(p, osp.getsize(p)) for p in written], dense_bytes,
                        summary, logits_diff, onnx_diff, pruning, changes,
                        int8_report)
