"""Data-free baselines: weight magnitude and random scores."""
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor


def magnitude_scores(params: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Score every weight by its magnitude ``|w|``.

    Args:
        params (Mapping[str, Tensor]): Prunable weights by name, e.g. from
            :func:`~epsd_mm.pruning.prunable_parameters`.

    Returns:
        dict[str, Tensor]: ``|w|`` per weight, detached.
    """
    return {name: w.detach().abs() for name, w in params.items()}


def random_scores(params: Mapping[str, Tensor],
                  generator: Optional[torch.Generator] = None
                  ) -> Dict[str, Tensor]:
    """Score every weight uniformly at random in ``[0, 1)``.

    Args:
        params (Mapping[str, Tensor]): Prunable weights by name.
        generator (torch.Generator, optional): Source of randomness, for
            reproducible scores. Defaults to None (the global generator).

    Returns:
        dict[str, Tensor]: Float32 scores on each weight's device.
    """
    scores = {}
    for name, w in params.items():
        device = w.device if generator is None else generator.device
        scores[name] = torch.rand(
            w.shape, generator=generator, device=device).to(w.device)
    return scores
