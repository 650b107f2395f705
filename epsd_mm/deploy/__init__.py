"""From a pruned training checkpoint to a deliverable model.

Typical use (what ``tools/deploy/export.py`` does)::

    result = export_pruned_checkpoint(cfg, 'work_dirs/epsd/iter_20000.pth',
                                      'deploy/', onnx=True, int8=True)
    state_dict = load_sparse_checkpoint('deploy/sparse.pth')

an exported ONNX file in its model's place (what
``tools/deploy/test_onnx.py`` does before ``runner.test()``)::

    session = onnxruntime.InferenceSession('deploy/model.onnx')
    attach_onnx_network(model, session)

and, for a (pruned) model, its params and FLOPs counting only the weights
that work::

    print(format_complexity_table(model_complexity(model, inputs)))
"""
from .checkpoint import build_model
from .complexity import (PartComplexity, format_complexity_table,
                         model_complexity, zero_weight_masks)
from .config import deploy_config, input_shape_from_cfg, plain_model_cfg
from .export import ExportResult, check_out_dir, export_pruned_checkpoint
from .fold import fold_masks
from .onnx_export import (TensorModeModel, export_onnx, onnx_max_abs_diff,
                          ort_session)
from .onnx_model import (OnnxEvalError, OnnxNetwork, attach_onnx_network,
                         check_first_batch)
from .quantize import QuantizeReport, calibration_batches, quantize_int8
from .sparse import (SparseSummary, identical_state_dicts,
                     load_sparse_checkpoint, save_sparse_checkpoint)

__all__ = [
    'ExportResult', 'OnnxEvalError', 'OnnxNetwork', 'PartComplexity',
    'QuantizeReport', 'SparseSummary', 'TensorModeModel',
    'attach_onnx_network', 'build_model', 'calibration_batches',
    'check_first_batch', 'check_out_dir', 'deploy_config', 'export_onnx',
    'export_pruned_checkpoint', 'fold_masks', 'format_complexity_table',
    'identical_state_dicts', 'input_shape_from_cfg', 'load_sparse_checkpoint',
    'model_complexity', 'onnx_max_abs_diff', 'ort_session', 'plain_model_cfg',
    'quantize_int8', 'save_sparse_checkpoint', 'zero_weight_masks'
]
