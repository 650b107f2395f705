"""Measure epsd_mm side by side and write ``docs/benchmarks.md``.

Every number in one table comes from the same run, model, input size and
batch, so the ratios are comparable; absolute times depend on the machine.
Each section lives in ``benchmarks/<section>.py`` (the harness, outside
the package and the user tools):

    scoring             wall time and peak memory of prospr (full /
                        first-order, M=1..3) relative to snip
    step                a masked training step relative to a dense one, and
                        the step of every SD method relative to plain CE
    quality             demo segmentation and WSOL quality at 90% sparsity
                        over seeds: dense, dense+SD, random+SD, simple
                        combination, EPSD
    export              file sizes (dense, folded, sparse, ONNX) and the
                        latency of folded vs dense models
    structured          channel pruning: FLOPs, eager / onnxruntime latency
                        and training step, slim vs dense
    structured_quality  demo quality of structured EPSD and its baselines
    sweep               quality vs sparsity (0.9 .. 0.99) of the baseline
                        family over seeds, with plots
    deliverables        what export ships (dense, backbone-only and
                        whole-model slim; fp32 and int8 ONNX): size, FLOPs,
                        onnxruntime latency at 1 and --threads threads
    deliverables_quality
                        demo mIoU of the shipped ONNX files (fp32, int8)
                        of dense, backbone-only and whole-model structured
                        EPSD over seeds, through tools/deploy/test_onnx.py

Only the sections asked for are rewritten; the report keeps the others.

Example:
    python tools/benchmark.py --sections scoring step quality --seeds 0 1 2
"""
import argparse
import os
import os.path as osp
import platform
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from benchmarks import SECTIONS  # noqa: E402
from benchmarks.common import RESULTS_DIR, ROOT, versions  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--sections', nargs='+', default=list(SECTIONS),
        choices=list(SECTIONS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument(
        '--latency-repeats',
        type=int,
        default=20,
        help='timed batch-1 inference runs per model (median reported)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='training runs (quality, structured_quality, sweep, '
        'deliverables_quality) at the '
        'same time; --threads is split among them')
    parser.add_argument('--out', default=osp.join(ROOT, 'docs/benchmarks.md'))
    parser.add_argument(
        '--results-dir',
        default=RESULTS_DIR,
        help='where the outcome of every training run is recorded and '
        'looked up (<section>.jsonl, keyed by the run\'s whole config; '
        'committed with the tables, so a table is rebuilt or extended on '
        'another machine without training again); "" records nothing')
    for module in SECTIONS.values():
        if hasattr(module, 'add_arguments'):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < args.jobs:
        parser.error(f'--jobs must be in [1, --threads], got {args.jobs} '
                     f'with --threads {args.threads}.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    tables = []
    for name in args.sections:
        tables += SECTIONS[name].run(args)
    command = 'python tools/benchmark.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    machine = (f'{platform.machine()}, {os.cpu_count()} cores, CPU only, '
               f'{args.threads} torch threads; {versions()}')
    write_report(args.out, tables, command, machine)
    print(f'wrote {args.out}')


def write_report(path: str, tables: List[tuple], command: str,
                 machine: str) -> None:
    """Replace the given tables of the report, keep the others.

    Each table records the command and machine that produced it, so a
    report assembled from several runs still says where every number came
    from (all ratios inside one table come from one run).
    """
    blocks: Dict[str, str] = {}
    if osp.exists(path):
        with open(path) as f:
            for block in f.read().split('\n## ')[1:]:
                title, _, body = block.partition('\n')
                blocks[title.strip()] = body.strip('\n')
    for title, lines in tables:
        blocks[title] = '\n'.join(
            [f'Measured by `{command}` on {machine}.', ''] + lines)
    text = [
        '# Benchmarks', '',
        'Written by `tools/benchmark.py` (after `make setup`, '
        '`python tools/make_demo_data.py voc` and `... cub`). Absolute '
        'times depend on the machine; compare the ratios within a table. '
        'The outcome of every training run behind a table is in '
        '`benchmarks/results/<section>.jsonl` where the table was measured '
        'after that ledger began (2026-12-07).', ''
    ]
    for title, body in blocks.items():
        text += [f'## {title}', '', body, '']
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(text))


if __name__ == '__main__':
    main()
