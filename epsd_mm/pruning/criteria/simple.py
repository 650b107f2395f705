"""Data-free baselines: weight magnitude and random scores."""
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from .base import CRITERIA, Criterion, ScoringInputs


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


@CRITERIA.register('magnitude')
class Magnitude(Criterion):
    """Magnitude pruning, data-free.

    Weights: ``|w|``. Channels: the L1 norm of each channel's filters,
    summed over the coupled Conv/Linear layers of its group (the
    filter-pruning baseline, Li et al. 2017); biases and norm layers are
    left out. A filter's norm grows with its fan-in, so global channel
    selection compares each group's scores relative to their mean.
    """
    data = 'none'
    channel_normalization = 'mean'

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        return magnitude_scores(params)

    def channel_scores(self, graph, inputs: ScoringInputs) -> Dict[str, Tensor]:
        return graph.channel_sums(
            magnitude_scores(graph.parameters()), filters_only=True)


@CRITERIA.register('random')
class Random(Criterion):
    """Uniform random scores in ``[0, 1)``, data-free: one per weight, or
    one per channel.

    Args:
        generator (torch.Generator, optional): Source of randomness.
            Defaults to None (the global generator, seeded by the run).
    """
    data = 'none'

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        return random_scores(params, self.generator)

    def channel_scores(self, graph, inputs: ScoringInputs) -> Dict[str, Tensor]:
        return {
            name: torch.rand(group.num_channels, generator=self.generator)
            for name, group in graph.groups.items()
        }
