import torch

from epsd_mm.deploy import TensorModeModel, export_onnx, onnx_max_abs_diff
from epsd_mm.deploy.checkpoint import build_model
from epsd_mm.deploy.config import deploy_config


def test_onnx_matches_pytorch(pruned, tmp_path):
    cfg, _ = deploy_config(pruned.cfg)
    model = build_model(cfg)
    model.load_state_dict(pruned.model.state_dict(), strict=False)
    inputs = torch.randn(1, 3, 64, 64)
    path = str(tmp_path / 'model.onnx')
    export_onnx(model, inputs, path)
    assert onnx_max_abs_diff(path, model, inputs) <= 1e-4
    # the check can fail: another model's outputs differ
    other = build_model(cfg)
    assert onnx_max_abs_diff(path, other, inputs) > 1e-2
    assert TensorModeModel(model)(inputs).shape == (1, 21, 8, 8)
