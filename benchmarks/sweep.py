"""Sparsity sweep: the baseline family at 90-99% sparsity, over seeds.

At 90% sparsity 10% of a small net's weights still suffice and seed spread
hides every gap; the sweep goes to 99%, where pruning criteria part ways.
For each task, method, sparsity and seed, ``tools/train.py`` trains the
edited demo config in a fresh process. A run whose config has an outcome
in the ledger (``benchmarks/results/sweep.jsonl``) or its work dir is not
trained again, so an interrupted sweep resumes where it stopped, on this
machine or another. The report gets one mean ± std table per
metric and task; ``sweep_<task>.png`` next to the report plots each metric
against sparsity per method, with the seeds' standard deviation as error
bars.

Tasks: ``cls`` (``configs/demo/epsd_resnet_cifar_demo.py``: accuracy, ECE,
AURC; write its data with ``tools/make_demo_data.py cifar``) and ``seg``
(``configs/demo/epsd_deeplab_voc_demo.py``: mIoU, aAcc).

Example (the full sweep, and short smoke runs of each task)::

    python tools/benchmark.py --sections sweep --seeds 0 1 2 3 4
    python tools/benchmark.py --sections sweep --seeds 0 --sweep-tasks seg \\
        --sweep-sparsities 0.9 0.99 --out /tmp/sweep/benchmarks.md \\
        --quality-max-iters 20
    python tools/benchmark.py --sections sweep --seeds 0 --sweep-tasks cls \\
        --sweep-sparsities 0.9 0.99 --out /tmp/sweep/benchmarks.md \\
        --sweep-cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1
"""
import copy
import os
import os.path as osp
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from .common import (CLS_DEMO, ROOT, SEG_DEMO, WORK_ROOT, Outcome,
                     section_ledger, shorten_schedule, train_all)

SECTION = 'sweep'


@dataclass(frozen=True)
class SweepTask:
    """A demo config and the metrics the sweep reports for it.

    Args:
        title (str): Title of the task in the report.
        config (str): The EPSD demo config, relative to the repository.
        metrics (tuple): ``(key, higher_is_better)`` per reported metric, as
            logged at the end of training (the first one is the headline).
    """
    title: str
    config: str
    metrics: Tuple[Tuple[str, bool], ...]


@dataclass(frozen=True)
class Method:
    """One member of the baseline family, as an edit of the EPSD config.

    Args:
        key (str): Short name, for ``--sweep-methods``.
        name (str): Row name in the report.
        edit (callable): Changes a loaded config in place.
        pruned (bool): False for a dense method: one run per seed, shown at
            every sparsity. Defaults to True.
        top_sparsities (int, optional): Run only at the highest this many
            sparsities. Defaults to None (all).
    """
    key: str
    name: str
    edit: Callable[[Config], None]
    pruned: bool = True
    top_sparsities: Optional[int] = None


def _pruning(**kwargs) -> Callable[[Config], None]:
    """An edit of the pruning hook's arguments."""
    return lambda cfg: cfg.default_hooks.pruning.update(kwargs)


def _no_pruning(cfg: Config) -> None:
    cfg.default_hooks.pop('pruning')


# The same keys the configs in configs/deeplab_voc change; none of them
# touches the model, so they hold for any SD method the demo config trains.
METHODS = (
    Method('dense', 'dense + SD', _no_pruning, pruned=False),
    Method('random', 'random + SD', _pruning(criterion='random')),
    Method('snip', 'SNIP + SD', _pruning(criterion='snip', loss='task')),
    Method('simple', 'simple combination (prospr, task loss) + SD',
           _pruning(loss='task')),
    Method('epsd', 'EPSD (prospr, SD loss) + SD', lambda cfg: None),
    Method(
        'epsd_it',
        'EPSD-It (3 rounds) + SD',
        _pruning(rounds=3),
        top_sparsities=2),
    # The later pruning-at-initialisation methods, as their authors run
    # them: FORCE on the task loss, NTK-SAP and PHEW without data.
    Method('force', 'FORCE (task loss) + SD',
           _pruning(criterion='force', loss='task')),
    Method('ntk_sap', 'NTK-SAP + SD', _pruning(criterion='ntk_sap')),
    Method('phew', 'PHEW + SD', _pruning(criterion='phew')),
)

TASKS = {
    # the paper's own experiment family, at demo size; calibration as in its
    # Section E (lower is better)
    'cls':
    SweepTask('Demo classification (ResNet-18 width 8, CIFAR layout)',
              CLS_DEMO, (('accuracy/top1', True), ('calibration/ece', False),
                         ('calibration/aurc', False))),
    'seg':
    SweepTask('Demo segmentation (DeepLabV3, VOC layout)', SEG_DEMO,
              (('mIoU', True), ('aAcc', True))),
}


def add_arguments(parser) -> None:
    group = parser.add_argument_group('sweep section')
    group.add_argument(
        '--sweep-tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    group.add_argument(
        '--sweep-sparsities',
        nargs='+',
        type=float,
        default=[0.9, 0.95, 0.98, 0.99])
    group.add_argument(
        '--sweep-methods',
        nargs='+',
        default=[m.key for m in METHODS],
        choices=[m.key for m in METHODS],
        help='the methods to train and report (default: all)')
    group.add_argument(
        '--sweep-cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        help='config overrides applied to every run, e.g. a short schedule '
        'for a smoke test by epochs: train_cfg.max_epochs=1 '
        'train_cfg.val_interval=1 (by iterations: --quality-max-iters)')
    group.add_argument(
        '--sweep-work-dir',
        default=osp.join(WORK_ROOT, 'sweep'),
        help='runs live here (part of each run\'s config, hence of the key '
        'of its recorded outcome)')


def run(args) -> List[Tuple[str, List[str]]]:
    _check_args(args)
    tables = []
    for name in args.sweep_tasks:
        task = TASKS[name]
        runs = _plan(task, args)
        results = _execute(runs, args)
        summary = _summarise(runs, results)
        # A shortened schedule is another experiment: its own sections
        # and plot, beside those of the config's full schedule.
        short = args.quality_max_iters
        plot = osp.join(
            osp.dirname(osp.abspath(args.out)),
            f'sweep_{name}{f"_{short}it" if short else ""}.png')
        plot_sweep(task, _methods(args), summary, args.sweep_sparsities,
                   plot)
        print(f'wrote {plot}', flush=True)
        for index, (key, higher) in enumerate(task.metrics):
            # The plot (all metrics) goes under the headline metric's table.
            tables.append((f'Sparsity sweep: {task.title}, {key}' +
                           (f' ({short} iterations)' if short else ''),
                           _table(task, key, higher, summary, args,
                                  '' if index else osp.basename(plot))))
    return tables


def _check_args(args) -> None:
    bad = [s for s in args.sweep_sparsities if not 0 < s < 1]
    if bad:
        raise ValueError(f'--sweep-sparsities must be in (0, 1), got {bad}.')
    if len(set(args.sweep_sparsities)) != len(args.sweep_sparsities):
        raise ValueError('--sweep-sparsities has duplicates: '
                         f'{args.sweep_sparsities}.')


# Planning -------------------------------------------------------------------
@dataclass
class Run:
    """One training run of the sweep."""
    method: Method
    sparsity: Optional[float]  # None: dense
    seed: int
    cfg: Config
    work_dir: str


def _plan(task: SweepTask, args) -> List[Run]:
    """Every run of a task, with its edited config; validates every pruned
    config's hook before anything trains."""
    sparsities = sorted(args.sweep_sparsities)
    base = Config.fromfile(osp.join(ROOT, task.config))
    # Options first: a dense method then drops pruning options with the hook.
    base.merge_from_dict(args.sweep_cfg_options)
    shorten_schedule(base, args.quality_max_iters)
    runs = []
    for method in _methods(args):
        points: List[Optional[float]] = [None]
        if method.pruned:
            points = sparsities[-method.top_sparsities:] if (
                method.top_sparsities) else sparsities
        for sparsity in points:
            cfg = copy.deepcopy(base)
            method.edit(cfg)
            if sparsity is not None:
                cfg.default_hooks.pruning.sparsity = sparsity
            reason = _hook_rejects(cfg)
            if reason:
                raise ValueError(
                    f'sweep: the pruning hook rejects the config of '
                    f'{method.name!r}: {reason}')
            for seed in args.seeds:
                point = 'dense' if sparsity is None else f's{sparsity:g}'
                work_dir = osp.join(args.sweep_work_dir,
                                    osp.basename(task.config)[:-3],
                                    _slug(method.name), point, f'seed{seed}')
                runs.append(Run(method, sparsity, seed, cfg, work_dir))
    return runs


def _methods(args) -> List[Method]:
    """The selected methods, in the report's order."""
    return [m for m in METHODS if m.key in args.sweep_methods]


def _hook_rejects(cfg: Config) -> str:
    """Why the config's pruning hook cannot be built ('' if it can)."""
    pruning = cfg.get('default_hooks', {}).get('pruning')
    if pruning is None:
        return ''
    from epsd_mm.registry import HOOKS
    try:
        HOOKS.build(pruning.to_dict())
    except (TypeError, ValueError, KeyError) as error:
        return f'{type(error).__name__}: {error}'
    return ''


def _slug(name: str) -> str:
    slug = ''.join(c if c.isalnum() else '_' for c in name.lower())
    return '_'.join(part for part in slug.split('_') if part)


# Running --------------------------------------------------------------------
def _execute(runs: List[Run], args) -> List[Outcome]:
    """Train every run (or read its recorded outcome)."""
    named = []
    for run in runs:
        point = 'dense' if run.sparsity is None else f'{run.sparsity:g}'
        named.append((f'{run.method.name} @ {point} seed {run.seed}',
                      run.cfg, run.seed, run.work_dir))
    return train_all(named, args.jobs, args.threads, 'sweep',
                     section_ledger(args, SECTION))


# Reporting ------------------------------------------------------------------
@dataclass
class Cell:
    """The runs of one method at one sparsity (all seeds)."""
    values: Dict[str, List[float]] = field(default_factory=dict)
    collapsed: int = 0

    def mean_std(self, key: str) -> Optional[Tuple[float, float]]:
        values = self.values.get(key)
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), std


#: ``(method name, sparsity, None for dense methods) -> cell``.
Summary = Dict[Tuple[str, Optional[float]], Cell]


def _summarise(runs: List[Run], outcomes: List[Outcome]) -> Summary:
    summary: Summary = {}
    for run, outcome in zip(runs, outcomes):
        cell = summary.setdefault((run.method.name, run.sparsity), Cell())
        cell.collapsed += bool(outcome.collapsed)
        for key, value in outcome.metrics.items():
            cell.values.setdefault(key, []).append(value)
    return summary


def _cell_of(summary: Summary, method: Method, sparsity: float) -> Cell:
    return summary.get((method.name, sparsity if method.pruned else None),
                       Cell())


def _table(task: SweepTask, key: str, higher: bool, summary: Summary, args,
           plot: str) -> List[str]:
    sparsities = sorted(args.sweep_sparsities)
    lines = [
        f'`{task.config}`, {key} ({"higher" if higher else "lower"} is '
        f'better) at each backbone sparsity; mean ± std over seeds '
        f'{list(args.seeds)}; in bold the best pruned method of each column '
        'among those that trained every seed. '
        'Dense rows are trained once per seed and repeated in every column. '
        '"collapse": the criterion pruned every weight of a layer, so the '
        'pruning hook refused to train (with `--sweep-cfg-options '
        'default_hooks.pruning.min_density=0.01` a floor is kept instead).' +
        (f' Every run with `{_format_options(args.sweep_cfg_options)}`.'
         if args.sweep_cfg_options else '') +
        (f' Every run stopped after {args.quality_max_iters} iterations, its '
         'schedulers scaled to fit.' if args.quality_max_iters else ''), '',
        *([f'![{task.title} vs sparsity]({plot})', ''] if plot else []),
        '| method | ' + ' | '.join(f'{s:.0%}' for s in sparsities) + ' |',
        '| --- |' + ' ---: |' * len(sparsities)
    ]
    best = {}
    for s in sparsities:
        means = [
            mean for method in _methods(args) if method.pruned
            if (mean := _ranked_mean(_cell_of(summary, method, s), key))
            is not None
        ]
        if means:
            best[s] = max(means) if higher else min(means)
    off_target = []
    for method in _methods(args):
        cells = []
        for s in sparsities:
            cell = _cell_of(summary, method, s)
            stats = cell.mean_std(key)
            if stats is None:
                cells.append('collapse' if cell.collapsed else '–')
                continue
            text = f'{stats[0]:.2f} ± {stats[1]:.2f}'
            if (method.pruned and s in best
                    and _ranked_mean(cell, key) == best[s]):
                text = f'**{text}**'
            if cell.collapsed:
                text += f' ({cell.collapsed} collapsed)'
            cells.append(text)
            measured = cell.values.get('sparsity', [])
            if method.pruned and any(abs(m - s) > 0.005 for m in measured):
                off_target.append(f'{method.name} at {s:.0%}: {measured}')
        lines.append(f'| {method.name} | ' + ' | '.join(cells) + ' |')
    if off_target:
        lines += [
            '', 'Measured sparsity off target: ' + '; '.join(off_target) + '.'
        ]
    return lines


def _ranked_mean(cell: Cell, key: str) -> Optional[float]:
    """The cell's mean if every seed trained, else None: a mean over the
    seeds that survived a collapse is not comparable with one over every
    seed, so it never competes for the bold mark."""
    stats = cell.mean_std(key)
    return None if cell.collapsed or stats is None else stats[0]


def _format_options(options: dict) -> str:
    return ' '.join(f'{k}={v}' for k, v in options.items())


def plot_sweep(task: SweepTask, methods: Sequence[Method], summary: Summary,
               sparsities: Sequence[float], path: str) -> None:
    """One panel per metric: mean ± std over seeds against sparsity, one
    line per method, dense methods as a horizontal band; an ``x`` on the
    lower edge marks a sparsity where every seed of a method collapsed, an
    open marker a mean over the seeds that survived a collapse."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    sparsities = sorted(sparsities)
    fig, axes = plt.subplots(
        1,
        len(task.metrics),
        figsize=(5.5 * len(task.metrics), 4.2),
        squeeze=False)
    # Density on a log axis spreads 90..99% sparsity evenly.
    densities = [1 - s for s in sparsities]
    for ax, (key, higher) in zip(axes[0], task.metrics):
        collapsed = []
        for method in methods:
            colour = f'C{METHODS.index(method) % 10}'  # stable per method
            if not method.pruned:
                stats = _cell_of(summary, method, sparsities[0]).mean_std(key)
                if stats:
                    mean, std = stats
                    ax.axhline(mean, color=colour, ls='--', label=method.name)
                    ax.axhspan(
                        mean - std, mean + std, color=colour, alpha=0.15)
                continue
            points, partial = [], []
            for s in sparsities:
                cell = _cell_of(summary, method, s)
                stats = cell.mean_std(key)
                if stats:
                    points.append((1 - s, *stats))
                    if cell.collapsed:
                        partial.append((1 - s, stats[0]))
                elif cell.collapsed:
                    collapsed.append((1 - s, colour))
            if points:
                x, mean, std = zip(*points)
                ax.errorbar(
                    x,
                    mean,
                    yerr=std,
                    color=colour,
                    marker='o',
                    capsize=3,
                    label=method.name)
            if partial:
                ax.plot(*zip(*partial), ls='', marker='o', mfc='white',
                        color=colour, zorder=3)
        low = ax.set_ylim(ax.get_ylim())[0]  # the marks must not rescale
        for x, colour in collapsed:
            ax.plot(x, low, marker='x', color=colour, ms=10, mew=2,
                    clip_on=False)
        ax.set_xscale('log')
        ax.set_xticks(densities, [f'{s:.0%}' for s in sparsities])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel('backbone sparsity (x: every seed collapsed, '
                      'open: some seeds collapsed)')
        ax.set_ylabel(f'{key} ({"higher" if higher else "lower"} is better)')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f'{task.title}: mean ± std over seeds')
    fig.tight_layout()
    os.makedirs(osp.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
