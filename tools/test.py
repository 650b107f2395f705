"""Evaluate a (pruned) checkpoint (follows mmseg's tools/test.py).

The metrics line carries the checkpoint's sparsity next to the task metrics
(mIoU, WSOL accuracies, ...) when the checkpoint is pruned.

Example:
    python tools/test.py configs/epsd_deeplab_voc.py work_dirs/epsd/iter_20000.pth
"""
import argparse

import epsd_mm  # noqa: F401  epsd_mm:: configs; components register lazily
from epsd_mm.utils.launch import (add_common_args, load_config,
                                  parse_common_args, run)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        type=str,
        help='dump the raw predictions to this pickle file (DumpResults)')
    add_common_args(parser)
    return parse_common_args(parser)


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.out is not None:
        cfg.test_evaluator = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator.append(
            dict(type='DumpResults', out_file_path=args.out))
    # only the data this run reads: no training data needed
    run(cfg, ('test_dataloader', ), lambda r: r.test())


if __name__ == '__main__':
    main()
