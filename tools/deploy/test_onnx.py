"""Evaluate an exported ONNX file with the config's test data and metric.

Runs MODEL.onnx (fp32 or int8, as written by tools/deploy/export.py --onnx)
with onnxruntime in place of the model's network, through the config's own
test dataloader, postprocessing and evaluator, and prints the metrics line
tools/test.py prints for the checkpoint (mmseg: aAcc / mIoU / mAcc; CAM:
the WSOL metrics; classification: accuracy and calibration).

CONFIG is the training config or the deploy_config.py written by export
(a training config loses its pruning/self-distillation hooks and wrappers
first, as export does). The ONNX graph has a fixed input size: the test
pipeline must give inputs of that size (or slide inference crops of it).

Example:
    python tools/deploy/test_onnx.py configs/demo/epsd_deeplab_voc_demo.py \
        work_dirs/demo/export/model.onnx
"""
import argparse
import copy
import os.path as osp
import sys
from typing import Dict, Optional, Sequence

from mmengine.config import Config
from mmengine.model import is_model_wrapper

import epsd_mm  # noqa: F401  epsd_mm:: configs; components register lazily
from epsd_mm.deploy import deploy_config, ort_session
from epsd_mm.deploy.onnx_model import (OnnxEvalError, attach_onnx_network,
                                       check_first_batch)
from epsd_mm.utils.launch import (add_common_args, load_config,
                                  parse_common_args, run)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'config', help='training config or the deploy_config.py of export')
    parser.add_argument('model', help='the exported .onnx file')
    parser.add_argument(
        '--threads',
        type=int,
        default=0,
        help='onnxruntime intra-op threads (default 0: onnxruntime chooses)')
    add_common_args(parser)
    return parse_common_args(parser, argv)


def onnx_test_config(cfg: Config) -> Config:
    """The deploy config of ``cfg`` (no epsd_mm hooks or wrappers, so no
    pruning hook runs), evaluated as ``tools/test.py`` evaluates ``cfg``.

    The model's ``test_cfg`` is the training config's: the deploy config
    makes a CAM localiser take its predicted class (deployed images carry
    no label), while the test set's labels give the WSOL protocol the
    training config asks for (a deploy config keeps the trained one as
    ``labelled_test_cfg``). Nothing is loaded into the model (its network
    is the ONNX file).

    Args:
        cfg (Config): A training or deploy config.

    Returns:
        Config: The config to build the Runner from.
    """
    test_cfg = copy.deepcopy(
        cfg.get('labelled_test_cfg', cfg.model.get('test_cfg')))
    cfg, _ = deploy_config(cfg)
    if test_cfg is not None:
        cfg.model.test_cfg = test_cfg
    cfg.load_from = None
    cfg.resume = False
    return cfg


def inference_session(path: str, threads: int = 0):
    """An onnxruntime CPU session of ``path``.

    Args:
        path (str): The .onnx file.
        threads (int): Intra-op threads; 0 lets onnxruntime choose.
            Defaults to 0.

    Returns:
        onnxruntime.InferenceSession: The session.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist; write it with tools/deploy/export.py '
            'CONFIG CHECKPOINT --out-dir DIR --onnx')
    return ort_session(path, threads)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Run the tool; returns the metrics (also printed by the Runner)."""
    args = parse_args(argv)
    cfg = onnx_test_config(load_config(args))
    metrics: Dict[str, float] = {}

    def evaluate(runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        attach_onnx_network(model, session, args.model)
        check_first_batch(runner.model, runner.test_dataloader)
        metrics.update(runner.test())

    try:
        session = inference_session(args.model, args.threads)
        run(cfg, ('test_dataloader', ), evaluate)
    except (FileNotFoundError, OnnxEvalError) as error:
        # a file that does not match the config: refused before evaluating
        sys.exit(f'test_onnx.py: error: {error}')
    return metrics


if __name__ == '__main__':
    main()
