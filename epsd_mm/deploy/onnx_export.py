"""Export the inference network to ONNX and check it with onnxruntime."""
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn


class TensorModeModel(nn.Module):
    """An MMEngine model as a plain ``forward(inputs) -> Tensor``.

    ``model(inputs, mode='tensor')`` is the network without pre- and
    post-processing (mmseg: the decode head's logits at feature resolution;
    ``CAMLocalizer``: the class activation maps).

    Args:
        model (nn.Module): An MMEngine ``BaseModel`` (mmseg segmentor, mmdet
            detector, ...).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        return self.model(inputs, mode='tensor')


def _as_tuple(outputs) -> Tuple[Tensor, ...]:
    if isinstance(outputs, Tensor):
        return (outputs, )
    if isinstance(outputs, (tuple, list)) and all(
            isinstance(o, Tensor) for o in outputs):
        return tuple(outputs)
    raise TypeError(
        f"model(inputs, mode='tensor') returned {type(outputs).__name__}; "
        'ONNX export needs a tensor or a tuple of tensors')


@torch.no_grad()
def export_onnx(model: nn.Module, inputs: Tensor, path: str) -> None:
    """Write the tensor-mode network of ``model`` as one ONNX file.

    Uses torch's default (dynamo) exporter with all weights inside the file
    (``external_data=False``); the input shape is fixed to that of
    ``inputs``.

    Args:
        model (nn.Module): The (folded) model, in eval mode.
        inputs (Tensor): Example batch ``(N, 3, H, W)``.
        path (str): Output ``.onnx`` file.
    """
    network = TensorModeModel(model).eval()
    torch.onnx.export(
        network, (inputs, ),
        path,
        input_names=['inputs'],
        external_data=False,
        verbose=False)


def ort_session(path: str, threads: int = 0, spinning: bool = True):
    """An onnxruntime CPU session of an ONNX file.

    Args:
        path (str): The ``.onnx`` file.
        threads (int): Intra-op threads; 0 lets onnxruntime choose.
            Defaults to 0.
        spinning (bool): Whether idle intra-op workers spin. Turn it off
            when several sessions take turns on few cores (their spinning
            workers slow the running one). Defaults to True.

    Returns:
        onnxruntime.InferenceSession: The session.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spinning:
        options.inter_op_num_threads = 1
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '0')
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


@torch.no_grad()
def onnx_max_abs_diff(path: str,
                      model: nn.Module,
                      inputs: Tensor,
                      num_threads: int = 0) -> float:
    """Largest absolute difference between onnxruntime and PyTorch outputs.

    Args:
        path (str): The ONNX file.
        model (nn.Module): The PyTorch model it was exported from.
        inputs (Tensor): The batch to compare on.
        num_threads (int): onnxruntime intra-op threads; 0 lets it choose.
            Defaults to 0.

    Returns:
        float: Max over all outputs and entries.
    """
    session = ort_session(path, num_threads)
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    expected = _as_tuple(TensorModeModel(model).eval()(inputs))
    got: Sequence[np.ndarray] = session.run(None, feed)
    if len(got) != len(expected):
        raise ValueError(f'{path} has {len(got)} outputs, the model '
                         f'{len(expected)}')
    for g, e in zip(got, expected):
        if g.shape != tuple(e.shape):
            raise ValueError(f'{path} outputs shape {g.shape}, the model '
                             f'{tuple(e.shape)}')
    return max(
        float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
