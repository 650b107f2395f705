"""Run an exported ONNX file inside the MMEngine model it was exported from.

:func:`attach_onnx_network` replaces the model's tensor-mode network (what
``model(inputs, mode='tensor')`` computes and ``export_onnx`` writes) by an
onnxruntime session, and leaves everything around it to the model's own
code: the data preprocessor, mmseg's whole/slide inference and resizing,
the CAM localiser's boxes, mmpretrain's softmax. A Runner's test loop and
evaluator then score the ONNX file exactly as ``tools/test.py`` scores the
checkpoint::

    session = onnxruntime.InferenceSession('deploy/model.onnx')
    attach_onnx_network(runner.model, session)
    runner.test()

Only the network's parameters are unused; the model is built from the
(deploy) config for its pre- and postprocessing.
"""
import types
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn


class OnnxEvalError(ValueError):
    """An ONNX file that cannot be evaluated under the given config (input
    shape, class count, model type)."""


class OnnxNetwork:
    """An onnxruntime session as ``network(inputs) -> Tensor``.

    The exported graph has a fixed input shape ``(N, C, H, W)``: a batch is
    run in chunks of ``N`` images (the last one zero-padded, the padding's
    outputs dropped), and inputs of another ``(C, H, W)`` are refused with
    the fix.

    Args:
        session (onnxruntime.InferenceSession): The exported network (one
            input, first output used).
        path (str): The file's name, for messages. Defaults to
            ``'the ONNX file'``.
    """

    def __init__(self, session, path: str = 'the ONNX file') -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise OnnxEvalError(
                f'{path} has {len(inputs)} inputs; the network exported by '
                'tools/deploy/export.py --onnx has one (the image batch)')
        self.session = session
        self.path = path
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.output_shape = tuple(session.get_outputs()[0].shape)
        if not all(isinstance(d, int) for d in self.input_shape):
            raise OnnxEvalError(
                f'{path} has a dynamic input shape {self.input_shape}; '
                'export it with a fixed one (tools/deploy/export.py --onnx '
                '--shape H W)')

    @property
    def num_channels(self) -> Optional[int]:
        """int | None: Channels (classes) of the output, if fixed."""
        channels = self.output_shape[1] if len(self.output_shape) > 1 else None
        return channels if isinstance(channels, int) else None

    def check_input(self, inputs: Tensor) -> None:
        """Refuse inputs whose ``(C, H, W)`` is not the graph's.

        Args:
            inputs (Tensor): The network's input batch ``(N, C, H, W)``.

        Raises:
            OnnxEvalError: Naming both shapes and the fix.
        """
        got, want = tuple(inputs.shape[1:]), self.input_shape[1:]
        if got == want:
            return
        raise OnnxEvalError(
            f'the network gets inputs of (C, H, W) = {got} from the test '
            f'pipeline, but {self.path} was exported for {want}. Export '
            f'with --shape {got[-2]} {got[-1]} (tools/deploy/export.py '
            '--onnx), or test with a pipeline that gives '
            f'{want[-2]}x{want[-1]} inputs: a fixed Resize(scale=({want[-1]}, '
            f'{want[-2]}), keep_ratio=False), or for mmseg slide inference '
            f'whose crop is the ONNX size (--cfg-options '
            f'model.test_cfg.mode=slide "model.test_cfg.crop_size=({want[-2]},'
            f'{want[-1]})" "model.test_cfg.stride=({want[-2] * 2 // 3},'
            f'{want[-1] * 2 // 3})")')

    def __call__(self, inputs: Tensor) -> Tensor:
        """Outputs of the graph's first output for a batch of any size.

        Args:
            inputs (Tensor): ``(B, C, H, W)``, ``(C, H, W)`` as exported.

        Returns:
            Tensor: ``(B, ...)`` float outputs on the device of ``inputs``.
        """
        self.check_input(inputs)
        chunk = self.input_shape[0]
        array = inputs.detach().cpu().numpy().astype(np.float32, copy=False)
        outputs = []
        for start in range(0, len(array), chunk):
            part = array[start:start + chunk]
            num = len(part)
            if num < chunk:
                pad = np.zeros((chunk - num, *part.shape[1:]), part.dtype)
                part = np.concatenate([part, pad])
            out = self.session.run(None, {self.input_name: part})[0]
            outputs.append(out[:num])
        return torch.from_numpy(np.concatenate(outputs)).to(inputs.device)


# --------------------------------------------------------------------------
# One strategy per model type: where the tensor-mode network is called.
# --------------------------------------------------------------------------
def _segmentor(model: nn.Module, network: OnnxNetwork) -> None:
    """mmseg ``EncoderDecoder``: ``encode_decode`` (whole and slide
    inference both call it) becomes ORT + ``decode_head.predict_by_feat``;
    tensor mode (``_forward``) the ORT logits."""

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]):
        return self.decode_head.predict_by_feat(network(inputs),
                                                batch_img_metas)

    model.encode_decode = types.MethodType(encode_decode, model)
    model._forward = lambda inputs, data_samples=None: network(inputs)


def _cam_localizer(model: nn.Module, network: OnnxNetwork) -> None:
    """epsd_mm ``CAMLocalizer``: ``_forward`` (the CAMs) is the network;
    ``predict`` pools, picks the class and draws the box from it."""
    model._forward = lambda inputs, data_samples=None: network(inputs)


def _image_classifier(model: nn.Module, network: OnnxNetwork) -> None:
    """mmpretrain ``ImageClassifier``: the network gives the head's logits;
    ``head._get_predictions`` (softmax, labels) does the rest."""

    def predict(self, inputs: Tensor, data_samples=None, **kwargs):
        return self.head._get_predictions(network(inputs), data_samples)

    model.predict = types.MethodType(predict, model)
    model._forward = lambda inputs, data_samples=None: network(inputs)


def _num_classes(model: nn.Module, head: str) -> int:
    return int(getattr(model, head).num_classes)


#: Model class name -> (strategy, attribute holding ``num_classes``).
STRATEGIES: Dict[str, Tuple[Callable[[nn.Module, OnnxNetwork], None], str]] = {
    'EncoderDecoder': (_segmentor, 'decode_head'),
    'CAMLocalizer': (_cam_localizer, 'head'),
    'ImageClassifier': (_image_classifier, 'head'),
}


def _strategy(model: nn.Module) -> Tuple[Callable, str]:
    """The strategy of the nearest supported class in ``model``'s MRO."""
    for cls in type(model).__mro__:
        if cls.__name__ in STRATEGIES:
            return STRATEGIES[cls.__name__]
    raise OnnxEvalError(
        f'cannot evaluate an ONNX file for a {type(model).__name__} model; '
        f'supported: {", ".join(sorted(STRATEGIES))} (and their subclasses). '
        'Add a strategy to epsd_mm.deploy.onnx_model.STRATEGIES for it.')


def attach_onnx_network(model: nn.Module,
                        session,
                        path: str = 'the ONNX file') -> OnnxNetwork:
    """Make ``model``'s tensor-mode network come from ``session``.

    Checks first that the ONNX output's channels are the model's number of
    classes. The model keeps its class, data preprocessor and
    postprocessing; only the methods that call the network are replaced on
    this instance.

    Args:
        model (nn.Module): The plain model built from the (deploy) config:
            an mmseg ``EncoderDecoder``, an epsd_mm ``CAMLocalizer`` or an
            mmpretrain ``ImageClassifier`` (a channel-pruned ``SlimModel``
            builds one of these).
        session (onnxruntime.InferenceSession): The exported file.
        path (str): The file's name, for messages. Defaults to
            ``'the ONNX file'``.

    Returns:
        OnnxNetwork: The network now called by ``model``.

    Raises:
        OnnxEvalError: The model type has no strategy, the class counts
            differ, or the graph's input shape is not fixed.
    """
    strategy, head = _strategy(model)
    network = OnnxNetwork(session, path)
    num_classes = _num_classes(model, head)
    if network.num_channels != num_classes:
        raise OnnxEvalError(
            f'{path} outputs {network.num_channels} channels (shape '
            f'{network.output_shape}), but the config\'s model has '
            f'{num_classes} classes (model.{head}.num_classes): the file '
            'was exported from another model. Pass the config the file was '
            'exported with (its deploy_config.py), or export this one.')
    strategy(model, network)
    return network


def check_first_batch(model: nn.Module, dataloader: Iterable) -> None:
    """Run the first test batch through ``model`` (with its ONNX network
    attached), so that inputs the file does not take are refused before
    any evaluation.

    Whole and slide inference, padding and resizing all happen as in the
    evaluation; a later batch of another size (a test pipeline without a
    fixed size) is refused when it comes, with the same message.

    Args:
        model (nn.Module): The model (or its wrapper) with
            :func:`attach_onnx_network` applied.
        dataloader (Iterable): The test dataloader.
    """
    for data_batch in dataloader:
        with torch.no_grad():
            model.test_step(data_batch)
        return
