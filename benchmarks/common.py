"""What the benchmark sections share: demo models, timers, and training
runs (cached, so an interrupted section resumes where it stopped, and
recorded in a committed ledger, so a table is rebuilt or extended on any
machine)."""
import copy
import json
import multiprocessing
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha1
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG_DEMO = 'configs/demo/epsd_deeplab_voc_demo.py'
CUB_DEMO = 'configs/demo/epsd_cam_cub_demo.py'
SEGFORMER_DEMO = 'configs/demo/epsd_segformer_voc_demo.py'
CLS_DEMO = 'configs/demo/epsd_resnet_cifar_demo.py'
WORK_ROOT = '/tmp/epsd_benchmark'
#: Where ``tools/benchmark.py`` records the outcome of every training run
#: (``<section>.jsonl``; committed with the tables made from it).
RESULTS_DIR = osp.join(ROOT, 'benchmarks', 'results')


def build_demo(config: str, batch_size: int, image_size: int):
    """Model, optimizer-wrapper config, one raw and one preprocessed batch of
    a demo config (its pruning hook removed)."""
    from mmengine.runner import Runner

    import epsd_mm  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.work_dir = WORK_ROOT
    cfg.default_hooks.pop('pruning', None)
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.num_workers = 0
    cfg.model.data_preprocessor.size = (image_size, image_size)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    data = next(iter(runner.train_dataloader))
    batch = model.data_preprocessor(data, training=True)
    return model, cfg.optim_wrapper, data, batch


def plain_segmentor(config: str, size: Optional[int] = None):
    """The config's segmentor as a plain mmseg model: no SD method (a
    benchmark measures the network), BN instead of SyncBN (CPU), nothing
    pretrained loaded; ``size`` sets the data preprocessor's crop size."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    from epsd_mm.deploy import plain_model_cfg
    from epsd_mm.registry import MODELS
    cfg = plain_model_cfg(Config.fromfile(osp.join(ROOT, config)).model)
    cfg.pretrained = None
    if size is not None:
        cfg.data_preprocessor.size = (size, size)
    with DefaultScope.overwrite_default_scope('epsd_mm'):
        return revert_sync_batchnorm(MODELS.build(cfg))


def shorten_schedule(cfg, max_iters: Optional[int]) -> None:
    """Train for ``max_iters`` instead of the config's iterations: the
    schedulers' begin/end scale with it, validation and the checkpoint come
    at the end. None keeps the config's schedule."""
    if max_iters is None:
        return
    if 'max_iters' not in cfg.train_cfg:
        raise ValueError(
            '--quality-max-iters shortens iteration-based schedules; this '
            'config trains by epochs: shorten it with --sweep-cfg-options '
            'train_cfg.max_epochs=<N> train_cfg.val_interval=<N> instead.')
    scale = max_iters / cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    for scheduler in cfg.param_scheduler:
        for key in ('begin', 'end'):
            if key in scheduler:
                scheduler[key] = int(round(scheduler[key] * scale))


def in_fresh_process(fn: Callable, *args, env: Optional[dict] = None):
    """``fn(*args)`` in a new spawned process: its memory peak and threads
    are its own. The worker's exception is raised here (as is a worker that
    died), never left waiting on.

    Args:
        fn (callable): A module-level function (it is pickled by name).
        *args: Its arguments, picklable.
        env (dict, optional): Environment variables set for the worker (and
            restored here afterwards). Defaults to None.
    """
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        with ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context('spawn')) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Max resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: The line a run's log holds when the pruning hook refused to cut every
#: weight of a layer (see ``epsd_mm.pruning.select_masks``): a result of the
#: criterion at that sparsity, recorded as such rather than as a failure.
COLLAPSE_MARKER = 'prunes every weight of'


@dataclass
class Outcome:
    """What one run gave.

    Args:
        metrics (dict): Metrics of the final validation (empty on collapse).
        collapsed (str): Why the hook refused to train ('' if it trained).
        cached (bool): Whether the outcome came from ``result.json``.
    """
    metrics: Dict[str, float]
    collapsed: str = ''
    cached: bool = False


def run_tool(args: Sequence[str], log_file: str, threads: int) -> int:
    """Run ``python ARGS`` from the repository root in a fresh process
    with ``threads`` OpenMP/MKL threads, its output in ``log_file``.

    Returns:
        int: The exit code.
    """
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    with open(log_file, 'w') as log:
        return subprocess.run([sys.executable, *args],
                              cwd=ROOT,
                              env=env,
                              stdout=log,
                              stderr=subprocess.STDOUT).returncode


class Ledger:
    """Outcomes of training runs, one JSON line per run, keyed by the sha1
    of the run's whole config (which holds its seed and work dir).

    The work dirs live in /tmp and go with the machine; the ledger is
    committed beside the tables made from it, so the same command on
    another machine rebuilds a table from it, or adds runs to it, instead of
    training again. A record says which commit trained it: after changing
    code a run depends on (not its config), delete the section's file to
    train again.

    Args:
        path (str, optional): The JSON-lines file. None records nothing.
    """

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> Dict[str, dict]:
        if self.path is None or not osp.exists(self.path):
            return {}
        records = {}
        with open(self.path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    records[record['config_sha1']] = record
                except (ValueError, KeyError, TypeError) as error:
                    raise ValueError(
                        f'{self.path}, line {number}: not a run record '
                        f'({type(error).__name__}: {error}). Restore the '
                        f'file with `git checkout -- {self.path}`, or delete '
                        'the line (its run trains again).') from error
        return records

    def get(self, digest: str) -> Optional[dict]:
        """The record of the run whose config has sha1 ``digest``."""
        with self._lock:
            return self._read().get(digest)

    def record(self, digest: str, **fields) -> None:
        """Add ``fields`` to the run's record (creating it); the file is
        rewritten whole, so an interrupted write leaves the old one."""
        if self.path is None:
            return
        fields.pop('config_sha1', None)
        with self._lock:
            records = self._read()
            records[digest] = dict(
                records.get(digest, {}), config_sha1=digest, **fields)
            os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
            tmp = f'{self.path}.tmp'
            with open(tmp, 'w') as f:
                for record in records.values():
                    f.write(json.dumps(record, sort_keys=True) + '\n')
            os.replace(tmp, self.path)


def section_ledger(args, section: str) -> Ledger:
    """The ledger of a section under ``args.results_dir`` (none when the
    option is empty)."""
    results_dir = getattr(args, 'results_dir', '')
    return Ledger(
        osp.join(results_dir, f'{section}.jsonl') if results_dir else None)


def git_commit() -> str:
    """The repository's HEAD, with ``+dirty`` when tracked files other than
    the ledgers have changes."""
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                              cwd=ROOT,
                              capture_output=True,
                              text=True,
                              check=True).stdout.strip()
        # The ledgers themselves change as runs finish: not code.
        dirty = subprocess.run([
            'git', 'status', '--porcelain', '-uno', '--', '.',
            ':!benchmarks/results'
        ],
                               cwd=ROOT,
                               capture_output=True,
                               text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return head + ('+dirty' if dirty else '')


def run_config(cfg: Config, seed: int, work_dir: str) -> Tuple[Config, str]:
    """The config a run trains (``cfg`` with its seed and work dir; ``cfg``
    is not modified) and its sha1, the key of the run's outcome."""
    cfg = copy.deepcopy(cfg)
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    return cfg, sha1(cfg.pretty_text.encode()).hexdigest()


def train_cached(cfg: Config,
                 seed: int,
                 work_dir: str,
                 threads: int,
                 ledger: Optional[Ledger] = None) -> Outcome:
    """Train ``cfg`` with ``tools/train.py`` in a fresh process, unless the
    ledger or ``work_dir`` already holds the outcome of the same config.

    Args:
        cfg (Config): The edited config (not modified).
        seed (int): ``randomness.seed`` of the run.
        work_dir (str): The run's work dir; receives ``config.py``, the
            training output ``train.log`` and ``result.json``.
        threads (int): Torch threads of the training process.
        ledger (Ledger, optional): Where the outcome is looked up first and
            recorded (an outcome found only in ``result.json`` is recorded
            too). Defaults to None.

    Returns:
        Outcome: The final validation metrics, or the layer collapse that
        stopped the run before training.

    Raises:
        RuntimeError: When training fails for another reason; the last lines
            of its log are in the message.
    """
    cfg, digest = run_config(cfg, seed, work_dir)
    ledger = ledger or Ledger(None)
    record = ledger.get(digest)
    result_file = osp.join(work_dir, 'result.json')
    if record is None and osp.exists(result_file):
        with open(result_file) as f:
            result = json.load(f)
        if result.get('config_sha1') == digest:
            record = result
            ledger.record(digest, **result)
    if record is not None:
        return Outcome(
            record['metrics'], collapsed=record['collapsed'], cached=True)
    os.makedirs(work_dir, exist_ok=True)
    cfg_file = osp.join(work_dir, 'config.py')
    with open(cfg_file, 'w') as f:
        f.write(cfg.pretty_text)
    log_file = osp.join(work_dir, 'train.log')
    if run_tool(['tools/train.py', cfg_file, '--work-dir', work_dir],
                log_file, threads):
        with open(log_file) as f:
            lines = f.readlines()
        collapse = [line for line in lines if COLLAPSE_MARKER in line]
        if not collapse:
            raise RuntimeError(f'training failed ({log_file}):\n' +
                               ''.join(lines[-20:]))
        outcome = Outcome({}, collapsed=collapse[-1].split(': ', 1)[-1]
                          .split('. ')[0].strip())
    else:
        outcome = Outcome(
            final_val_metrics(work_dir, since=osp.getmtime(cfg_file)))
    result = dict(
        config_sha1=digest,
        work_dir=work_dir,
        metrics=outcome.metrics,
        collapsed=outcome.collapsed,
        commit=git_commit())
    with open(result_file, 'w') as f:
        json.dump(result, f, indent=1)
    ledger.record(digest, **result)
    return outcome


def final_val_metrics(work_dir: str, since: float = 0.0) -> Dict[str, float]:
    """Metrics of the last validation logged in ``work_dir`` by a run that
    started after ``since`` (a time stamp), from MMEngine's scalars.json."""
    scalars = sorted(
        osp.join(dp, f) for dp, _, fs in os.walk(work_dir) for f in fs
        if f == 'scalars.json' and osp.getmtime(osp.join(dp, f)) >= since)
    metrics = {}
    if scalars:
        with open(scalars[-1]) as f:
            for line in f:
                record = json.loads(line)
                if not any(k.startswith('loss') or k == 'lr' for k in record):
                    metrics = record
    if not metrics:
        raise RuntimeError(
            f'{work_dir}: training logged no validation metrics. Make the '
            'schedule end with a validation, e.g. --sweep-cfg-options '
            'train_cfg.val_interval=<max_iters or max_epochs>.')
    return {
        k: float(v)
        for k, v in metrics.items() if k not in ('step', 'time', 'data_time')
    }


def plan_runs(base: Config, family: Dict[str, Callable[[Config], None]],
              seeds: Sequence[int],
              tag: str) -> List[Tuple[str, Config, int, str]]:
    """The runs of :func:`train_all` for every method and seed.

    Args:
        base (Config): The config every method edits (not modified).
        family (dict): Method name -> edit of a copy of ``base``.
        seeds (list[int]): Seeds of each method.
        tag (str): Runs go to ``WORK_ROOT/<tag>/<method>/<seed>``.
    """
    runs = []
    for method, edit in family.items():
        cfg = copy.deepcopy(base)
        edit(cfg)
        slug = ''.join(c if c.isalnum() else '_' for c in method)
        runs += [(f'{method} seed {seed}', cfg, seed,
                  osp.join(WORK_ROOT, tag, slug, str(seed))) for seed in seeds]
    return runs


def fixed_threads_note(runs: Sequence[Tuple[str, Config, int, str]],
                       jobs: int, threads: int) -> str:
    """What to say when the runs' configs fix their torch threads (the demo
    configs do: their results depend on the count) to another number than
    the ``threads // jobs`` :func:`train_all` would give each run; the
    config wins, so the split does not take effect.

    Returns:
        str: The note, or ``''`` when the split takes effect.
    """
    per_run = max(1, threads // jobs)
    fixed = sorted({
        cfg.get('env_cfg', {}).get('torch_num_threads')
        for _, cfg, _, _ in runs
    } - {None, per_run})
    if not fixed:
        return ''
    return (f'the configs fix env_cfg.torch_num_threads={fixed[-1]}, which '
            f'wins over the {per_run} threads per run: {jobs} runs at a time '
            f'use up to {jobs * fixed[-1]} threads for --threads {threads}; '
            f'pass --jobs {max(1, threads // fixed[-1])} not to oversubscribe')


def train_all(runs: Sequence[Tuple[str, Config, int, str]],
              jobs: int,
              threads: int,
              tag: str,
              ledger: Optional[Ledger] = None) -> List[Outcome]:
    """Train runs with :func:`train_cached`, ``jobs`` at a time.

    Args:
        runs (list): ``(name, cfg, seed, work_dir)`` per run; the name is for
            the progress lines.
        jobs (int): Runs trained at the same time.
        threads (int): Torch threads shared among the parallel runs.
        tag (str): Prefix of the progress lines.
        ledger (Ledger, optional): Where outcomes are looked up and
            recorded. Defaults to None.

    Returns:
        list[Outcome]: One per run, in order.

    Raises:
        RuntimeError: After every other run finished, when some failed; the
            finished ones are cached, so the same command resumes.
    """
    per_run = max(1, threads // jobs)
    print(f'[{tag}] {len(runs)} runs, {jobs} at a time, {per_run} threads '
          'each', flush=True)
    note = fixed_threads_note(runs, jobs, threads)
    if note:
        print(f'[{tag}] note: {note}', flush=True)

    def train(run):
        name, cfg, seed, work_dir = run
        try:
            outcome = train_cached(cfg, seed, work_dir, per_run, ledger)
        except RuntimeError as error:  # the other runs go on
            print(f'[{tag}] {name} FAILED: {error}', flush=True)
            return error
        result = (f'collapsed ({outcome.collapsed})' if outcome.collapsed
                  else ', '.join(f'{k}={v:.4g}'
                                 for k, v in outcome.metrics.items()))
        print(f'[{tag}] {name}{" (cached)" if outcome.cached else ""}: '
              f'{result}', flush=True)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(train, runs))
    failed = [(run, error) for run, error in zip(runs, outcomes)
              if isinstance(error, Exception)]
    if failed:
        raise RuntimeError(
            f'{tag}: {len(failed)} of {len(runs)} runs failed (finished '
            'runs are cached; fix and run the same command again):\n' +
            '\n'.join(f'  {run[3]}: {str(error).splitlines()[0]}'
                      for run, error in failed))
    return outcomes


def versions() -> str:
    """Versions of the stack, for the report."""
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    return (f'torch {torch.__version__}, mmengine {mmengine.__version__}, '
            f'mmcv {mmcv.__version__}, mmseg {mmseg.__version__}, mmdet '
            f'{mmdet.__version__}, Python {platform.python_version()}')
