"""Static int8 quantization of an exported ONNX model with onnxruntime.

Two plain functions, usable without a Runner::

    batches = calibration_batches(cfg, model, num=32, split='val',
                                  shape=(512, 512))
    report = quantize_int8('model.onnx', 'model_int8.onnx', batches)
    print(report.summary())

:func:`calibration_batches` draws images through the config's own
dataloader (its dataset, its test pipeline) and the model's
``data_preprocessor``, exactly as evaluation feeds the network. The ONNX
graph has a fixed input shape (the export's ``shape``); a preprocessed image
of another size is resized (bilinear) to it.

:func:`quantize_int8` runs onnxruntime's static quantization (QDQ format,
per-channel int8 weights, uint8 activations) calibrated on those batches,
then reports which operators onnxruntime still runs in fp32 and how far the
int8 outputs are from the fp32 ones on the calibration batches.
"""
import itertools
import os.path as osp
import tempfile
from collections import Counter
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from .onnx_export import ort_session

CALIB_SPLITS = ('val', 'test')


class CalibrationError(ValueError):
    """The calibration data cannot be drawn (a transform raised, a sample
    dropped); raised before anything is written."""


class QuantizeReport(NamedTuple):
    """What :func:`quantize_int8` produced.

    Attributes:
        num_batches (int): Calibration batches used.
        fp32_ops (dict[str, int]): Operator type -> count of the nodes
            onnxruntime (CPU, graph optimisations on) still runs in fp32:
            those the quantizer left without Q/DQ around them and those
            whose Q/DQ pair onnxruntime could not fuse into an int8 kernel.
        not_quantized (dict[str, int]): Of those, the nodes the quantizer
            left without Q/DQ (compared with the fp32 graph's nodes).
        int8_ops (dict[str, int]): Operator type -> count of the int8
            kernels onnxruntime runs (``QLinearConv``, ...).
        max_abs_diff (float): Max abs difference between the int8 and the
            fp32 model's outputs on the calibration batches.
        max_rel_diff (float): ``max_abs_diff`` divided by the largest abs
            fp32 output.
        argmax_agreement (float, optional): Fraction of positions whose
            argmax over channels (classes) agrees, for 4D outputs.
    """
    num_batches: int
    fp32_ops: Dict[str, int]
    not_quantized: Dict[str, int]
    int8_ops: Dict[str, int]
    max_abs_diff: float
    max_rel_diff: float
    argmax_agreement: Optional[float]

    def summary(self) -> str:
        """One line: what stays fp32 and the int8 vs fp32 difference."""
        if self.fp32_ops:
            fp32 = ', '.join(f'{op} x{n}' for op, n in self.fp32_ops.items())
            fp32 += ' stay fp32'
        else:
            fp32 = 'no op stays fp32'
        int8 = ', '.join(f'{op} x{n}' for op, n in self.int8_ops.items())
        line = (f'int8: {int8 or "no int8 kernel"}; {fp32}; int8 vs fp32 on '
                f'{self.num_batches} calibration images: max abs diff '
                f'{self.max_abs_diff:.3g} ({self.max_rel_diff:.2%} of the '
                'largest output)')
        if self.argmax_agreement is not None:
            line += f', argmax agrees on {self.argmax_agreement:.2%}'
        return line


# --------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------
def calibration_dataloader_cfg(cfg: Config, split: str = 'val') -> dict:
    """The dataloader config calibration draws from, checked.

    Args:
        cfg (Config): The training (or deploy) config.
        split (str): ``'val'`` (``val_dataloader``) or ``'test'``
            (``test_dataloader``). Defaults to ``'val'``.

    Returns:
        dict: A copy of ``cfg.<split>_dataloader`` loading one image at a
        time in the main process.
    """
    if split not in CALIB_SPLITS:
        raise ValueError(f'calibration split {split!r} is not one of '
                         f'{CALIB_SPLITS}')
    key = f'{split}_dataloader'
    other = [s for s in CALIB_SPLITS if s != split][0]
    loader = cfg.get(key)
    if not loader or not loader.get('dataset'):
        what = 'no' if not loader else 'a dataset-less'
        raise ValueError(
            f'int8 calibration draws images from `{key}`, but the config has '
            f'{what} `{key}`{"" if not loader else ".dataset"}; pass '
            f'--calib-split {other} (calib_split={other!r}) to use '
            f'`{other}_dataloader`, or add a `{key}` with a dataset to the '
            'config')
    loader = Config(dict(loader)).to_dict()
    loader.update(batch_size=1, num_workers=0, persistent_workers=False)
    loader.pop('prefetch_factor', None)
    return loader


def build_eval_dataloader(cfg: Config, split: str = 'val'):
    """``cfg.<split>_dataloader`` loading one image at a time in the main
    process (:func:`calibration_dataloader_cfg`), built by
    ``Runner.build_dataloader`` in the config's default scope.

    Args:
        cfg (Config): The training (or deploy) config.
        split (str): ``'val'`` or ``'test'``. Defaults to ``'val'``.

    Returns:
        DataLoader: The dataloader (sampler seeded with 0).
    """
    from mmengine.runner import Runner
    loader_cfg = calibration_dataloader_cfg(cfg, split)
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmengine')):
        return Runner.build_dataloader(loader_cfg, seed=0)


def _pipeline_error(dataset, index: int, key: str,
                    error: Exception) -> CalibrationError:
    """Find the transform of ``dataset``'s pipeline that fails on sample
    ``index`` by running them one by one; an error naming it and the
    file."""
    try:
        info = dataset.get_data_info(index)
    except Exception:  # the sample cannot even be described
        info = {}
    files = ', '.join(f'{k}={v}' for k, v in info.items()
                      if k.endswith('_path') and isinstance(v, str))
    where = f'sample {index} ({files or "no file recorded"})'
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms',
                         None)
    if transforms is None or not info:
        return CalibrationError(
            f'int8 calibration: `{key}` failed to load {where}: '
            f'{type(error).__name__}: {error}')
    data = info
    for i, transform in enumerate(transforms):
        name = type(transform).__name__
        try:
            data = transform(data)
        except Exception as step_error:
            return CalibrationError(
                f'int8 calibration: transform {i} `{name}` of '
                f'`{key}.dataset.pipeline` raised '
                f'{type(step_error).__name__}: {step_error} on {where}. '
                f'Fix the file or the transform in `{key}`, or calibrate '
                'on the other split (--calib-split)')
        if data is None:
            return CalibrationError(
                f'int8 calibration: transform {i} `{name}` of '
                f'`{key}.dataset.pipeline` dropped {where} (returned None); '
                'calibration needs a pipeline that keeps every sample')
    return CalibrationError(
        f'int8 calibration: `{key}` failed to load {where} '
        f'({type(error).__name__}: {error}), but its transforms run one by '
        'one succeeded; the dataset itself failed')


def _resize(inputs: Tensor, shape: Tuple[int, int]) -> Tensor:
    if tuple(inputs.shape[-2:]) == tuple(shape):
        return inputs
    return F.interpolate(
        inputs, size=tuple(shape), mode='bilinear', align_corners=False)


@torch.no_grad()
def calibration_batches(cfg: Config,
                        model: nn.Module,
                        num: int = 32,
                        split: str = 'val',
                        shape: Optional[Tuple[int, int]] = None,
                        log=print) -> List[np.ndarray]:
    """Draw ``num`` calibration inputs through the config's pipeline.

    Builds ``cfg.<split>_dataloader`` (one image per batch, no workers) with
    ``Runner.build_dataloader``, takes its first ``num`` samples in sampler
    order and feeds each through ``model.data_preprocessor(data, False)``,
    i.e. exactly what evaluation gives the network. An image whose
    preprocessed size differs from ``shape`` (the ONNX graph's fixed input
    size) is resized to it, bilinearly.

    Args:
        cfg (Config): The config (its ``default_scope`` builds the dataset).
        model (nn.Module): The model whose ``data_preprocessor`` normalises
            the images.
        num (int): Number of images. Defaults to 32.
        split (str): ``'val'`` or ``'test'``. Defaults to ``'val'``.
        shape (tuple[int, int], optional): ``(H, W)`` of the returned
            arrays; None keeps each preprocessed size. Defaults to None.
        log (Callable[[str], None]): Progress messages. Defaults to print.

    Returns:
        list[np.ndarray]: ``num`` (or, from a smaller dataset, all) float32
        arrays of shape ``(1, 3, H, W)``.
    """
    if num < 1:
        raise ValueError(f'calibration needs at least one image, got '
                         f'calib_num={num}; pass --calib-num 1 or more '
                         '(default 32)')
    key = f'{split}_dataloader'
    root = calibration_dataloader_cfg(cfg, split)['dataset'].get('data_root')
    try:
        dataloader = build_eval_dataloader(cfg, split)
    except Exception as error:  # mmseg's datasets assert their paths
        raise CalibrationError(
            f'int8 calibration: the dataset of `{key}` could not be '
            f'built ({type(error).__name__}: {error}); check '
            f'`{key}.dataset` (data_root={root!r}) and its files, or '
            'calibrate on the other split (--calib-split)') from error
    dataset = dataloader.dataset
    indices = list(itertools.islice(iter(dataloader.sampler), num))
    if len(indices) < num:
        log(f'int8 calibration: `{key}` holds {len(indices)} images, '
            f'fewer than the {num} asked for; using all of them')
    batches = []
    for index in indices:
        try:
            sample = dataset[index]
        except Exception as error:
            raise _pipeline_error(dataset, index, key, error) from error
        data = dataloader.collate_fn([sample])
        inputs = model.data_preprocessor(data, False)['inputs']
        if shape is not None:
            inputs = _resize(inputs.float(), shape)
        batches.append(inputs.cpu().numpy().astype(np.float32))
    if not batches:
        raise ValueError(f'int8 calibration: `{key}` has no images; pass '
                         '--calib-split or fill the dataset')
    return batches


# --------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------
def _reader(input_name: str, batches: Iterable[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):

        def __init__(self) -> None:
            self._feeds = iter([{input_name: b} for b in batches])

        def get_next(self) -> Optional[dict]:
            return next(self._feeds, None)

    return _Batches()


def _producers(graph) -> Dict[str, object]:
    return {out: node for node in graph.node for out in node.output}


def _not_quantized(fp32_path: str, int8_path: str) -> Dict[str, int]:
    """Nodes of the fp32 graph that got no DequantizeLinear on their data
    inputs in the QDQ graph (nodes the quantizer fused away, e.g. a Relu
    after a Conv, are not listed)."""
    import onnx
    fp32 = onnx.load(fp32_path, load_external_data=False).graph
    qdq = onnx.load(int8_path, load_external_data=False).graph
    produced = _producers(qdq)
    initializers = {t.name for t in qdq.initializer}
    by_name = {n.name: n for n in qdq.node}
    missing = Counter()
    for node in fp32.node:
        quantized = by_name.get(node.name)
        if quantized is None:
            continue
        data = [
            i for i in quantized.input if i and i not in initializers
            and getattr(produced.get(i), 'op_type', '') != 'Constant'
        ]
        if not any(
                getattr(produced.get(i), 'op_type', '') == 'DequantizeLinear'
                for i in data):
            missing[node.op_type] += 1
    return dict(missing)


def _runtime_ops(int8_path: str) -> Tuple[Dict[str, int], Dict[str, int]]:
    """(fp32 ops, int8 ops) of the graph onnxruntime runs: the QDQ model
    after its CPU graph optimisations (extended level: the QDQ fusions into
    ``QLinear*`` kernels; the all level only changes layouts). An op runs
    in int8 when it is a ``QLinear*`` kernel or all its data inputs are int8
    (e.g. a MaxPool after a QLinearConv); any other op runs in fp32."""
    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        options.optimized_model_filepath = osp.join(tmp, 'optimized.onnx')
        ort.InferenceSession(
            int8_path, options, providers=['CPUExecutionProvider'])
        graph = onnx.load(options.optimized_model_filepath).graph
    constants = {t.name for t in graph.initializer}
    int8_tensors = set()
    fp32, int8 = Counter(), Counter()
    for node in graph.node:  # ONNX graphs are topologically sorted
        data = [i for i in node.input if i and i not in constants]
        if node.op_type == 'QuantizeLinear':
            int8_tensors.update(node.output)
        elif node.op_type == 'DequantizeLinear' or not data:
            continue
        elif node.op_type.startswith('QLinear') or all(
                i in int8_tensors for i in data):
            int8[node.op_type] += 1
            int8_tensors.update(node.output)
        else:
            fp32[node.op_type] += 1
    return dict(fp32), dict(int8)


def _compare(fp32_path: str, int8_path: str,
             batches: List[np.ndarray]) -> Tuple[float, float,
                                                 Optional[float]]:
    """Max abs / relative difference and argmax agreement of the two
    models' first outputs on ``batches``."""
    fp32, int8 = ort_session(fp32_path), ort_session(int8_path)
    name = fp32.get_inputs()[0].name
    max_abs, max_ref, agree, total = 0.0, 0.0, 0, 0
    for batch in batches:
        expected = fp32.run(None, {name: batch})[0]
        got = int8.run(None, {name: batch})[0]
        max_abs = max(max_abs, float(np.abs(got - expected).max()))
        max_ref = max(max_ref, float(np.abs(expected).max()))
        if expected.ndim == 4:
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
            total += expected.shape[0] * expected.shape[2] * expected.shape[3]
    return (max_abs, max_abs / max(max_ref, 1e-12),
            agree / total if total else None)


def quantize_int8(fp32_path: str,
                  int8_path: str,
                  batches: List[np.ndarray],
                  preprocess: bool = True) -> QuantizeReport:
    """Statically quantize an ONNX model to int8 (QDQ) with onnxruntime.

    ``onnxruntime.quantization.quant_pre_process`` (shape inference and
    graph clean-up) runs first, then ``quantize_static`` with per-channel
    int8 weights and uint8 activations, calibrated (MinMax) on ``batches``.

    Args:
        fp32_path (str): The fp32 ONNX model (one input).
        int8_path (str): Where to write the int8 model.
        batches (list[np.ndarray]): Calibration inputs of the model's input
            shape (see :func:`calibration_batches`).
        preprocess (bool): Run ``quant_pre_process`` first. Defaults to
            True.

    Returns:
        QuantizeReport: Ops left in fp32 and the int8 vs fp32 difference.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if not batches:
        raise ValueError('int8 quantization needs calibration batches')
    model = onnx.load(fp32_path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f'{fp32_path} has inputs {inputs}; int8 '
                         'calibration feeds models with one input')
    with tempfile.TemporaryDirectory() as tmp:
        source = fp32_path
        if preprocess:
            source = osp.join(tmp, 'preprocessed.onnx')
            quant_pre_process(fp32_path, source)
        quantize_static(
            source,
            int8_path,
            _reader(inputs[0], batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            # uint8 activations x int8 weights (U8S8) is the operand pair of
            # the x86 VNNI dot product (VPDPBUSD), and onnxruntime's docs
            # note its U8S8 saturation issue exists only on x86 *without*
            # VNNI. Measured on this VNNI machine (demo DeepLabV3, 1 thread):
            # with U8S8 onnxruntime fuses every Conv into QLinearConv (2.1x
            # faster than fp32); with int8 activations (S8S8, the docs'
            # default) it left half the Convs in fp32 and ran slower than
            # the fp32 model.
            activation_type=QuantType.QUInt8)
        not_quantized = _not_quantized(source, int8_path)
    fp32_ops, int8_ops = _runtime_ops(int8_path)
    max_abs, max_rel, agreement = _compare(fp32_path, int8_path, batches)
    return QuantizeReport(
        len(batches), fp32_ops, not_quantized, int8_ops, max_abs, max_rel,
        agreement)
