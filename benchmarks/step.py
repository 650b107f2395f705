"""Training step cost: masked vs dense, each SD method vs cross-entropy."""
import copy
import statistics
import time
from typing import Dict, List, Optional

import torch

from .common import SEG_DEMO, build_demo

SECTION = 'step'


def bench_step(args: dict) -> List[str]:
    torch.set_num_threads(args['threads'])
    from mmengine.optim import build_optim_wrapper

    from epsd_mm.pruning import (apply_masks, prunable_parameters,
                                 random_scores, register_mask_enforcement,
                                 select_masks)
    model, optim_cfg, data, _ = build_demo(SEG_DEMO, args['batch'],
                                           args['size'])
    masks = select_masks(
        random_scores(prunable_parameters(model, ('backbone', ))), 0.9)

    def variant(masked: bool, sd: Optional[dict]):
        net = copy.deepcopy(model)
        net.init_self_distill(sd)
        optim_wrapper = build_optim_wrapper(net, copy.deepcopy(optim_cfg))
        if masked:
            apply_masks(net, masks)
            register_mask_enforcement(optim_wrapper.optimizer, net)
        if net.sd is not None:
            net.sd.before_train(net)  # e.g. the PS-KD teacher
        return lambda: net.train_step(data, optim_wrapper)

    steps = {
        'dense, cross-entropy': variant(False, None),
        'masked 90%, cross-entropy': variant(True, None),
        'masked 90%, DLB': variant(True, dict(type='DLB')),
        'masked 90%, PS-KD': variant(True, dict(type='PSKD')),
        'masked 90%, CS-KD': variant(True, dict(type='CSKD')),
    }
    # Round-robin, so that load drift on the machine hits every row alike.
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up (DLB: fills its previous batch)
    for _ in range(args['repeats']):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    rows = {name: statistics.median(t) for name, t in times.items()}
    dense = rows['dense, cross-entropy']
    masked = rows['masked 90%, cross-entropy']
    lines = [
        f'Same demo DeepLabV3, input {args["size"]}x{args["size"]}, batch '
        f'{args["batch"]}, one `train_step` (forward, backward, SGD '
        'momentum step, mask enforcement where masked), median of '
        f'{args["repeats"]} round-robin repeats. DLB forwards the new batch '
        'plus the previous one; PS-KD adds a no-grad teacher forward; CS-KD '
        'forwards the anchor half with gradient and the partner half '
        'without.', '', '| step | seconds | vs dense CE | vs masked CE |',
        '| --- | ---: | ---: | ---: |'
    ]
    for name, seconds in rows.items():
        lines.append(f'| {name} | {seconds:.3f} | {seconds / dense:.2f}x | '
                     f'{seconds / masked:.2f}x |')
    return lines



def run(args) -> list:
    common = dict(size=args.size, batch=args.batch, repeats=args.repeats,
                  threads=args.threads)
    return [('Training step cost: masked vs dense, SD vs CE',
             bench_step(common))]
