"""Scoring cost: wall time and peak memory of prospr vs SNIP."""
from typing import Dict, List

import torch

from .common import (SEG_DEMO, build_demo, in_fresh_process, peak_rss_mb,
                     timed)

SECTION = 'scoring'


def _scoring_worker(kwargs: dict, args: dict) -> Dict[str, float]:
    torch.set_num_threads(args['threads'])
    from epsd_mm.models import model_loss
    from epsd_mm.pruning import compute_scores, prunable_parameters
    model, _, _, batch = build_demo(SEG_DEMO, args['batch'], args['size'])
    params = prunable_parameters(model, ('backbone', ))
    # prospr: one batch per loss evaluation; snip: 4 batches
    batches = [batch] * (kwargs.get('num_steps', 3) + 1)
    base = peak_rss_mb()
    seconds = timed(
        lambda: compute_scores(
            model, model_loss, batches, params=params, **kwargs),
        args['repeats'])
    return dict(seconds=seconds, extra_mb=peak_rss_mb() - base)


def bench_scoring(args: dict) -> List[str]:
    variants = [('snip', dict(criterion='snip'))]
    for first_order in (False, True):
        for steps in (1, 2, 3):
            name = (f'prospr M={steps} '
                    f'{"first-order" if first_order else "full"}')
            variants.append((name,
                             dict(
                                 criterion='prospr',
                                 num_steps=steps,
                                 lr=0.1,
                                 first_order=first_order)))
    results = {}
    for name, kwargs in variants:
        results[name] = in_fresh_process(_scoring_worker, kwargs, args)
        print(f'[scoring] {name}: {results[name]}', flush=True)
    snip = results['snip']
    lines = [
        f'Model: demo DeepLabV3 (ResNetV1c-18, width 16), input '
        f'{args["size"]}x{args["size"]}, batch {args["batch"]}; prospr takes '
        'one inner step per batch (M steps + the final loss = M+1 loss '
        'evaluations), snip sums its gradient over all 4 batches (4 '
        'evaluations). Peak memory is the growth of the process\'s max RSS '
        'during scoring.', '',
        '| criterion | wall time (s) | time vs snip | extra peak RSS (MB) | '
        'memory vs snip |', '| --- | ---: | ---: | ---: | ---: |'
    ]
    for name, r in results.items():
        lines.append(
            f'| {name} | {r["seconds"]:.2f} | '
            f'{r["seconds"] / snip["seconds"]:.2f}x | {r["extra_mb"]:.0f} | '
            f'{r["extra_mb"] / max(snip["extra_mb"], 1e-9):.2f}x |')
    return lines



def run(args) -> list:
    common = dict(size=args.size, batch=args.batch, repeats=args.repeats,
                  threads=args.threads)
    return [('Scoring cost: EPSD (prospr) vs SNIP', bench_scoring(common))]
