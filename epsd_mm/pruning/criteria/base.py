"""The criterion interface and the registry criteria are built from.

A criterion scores prunable weights (one score per entry, higher is kept)
and, if it can, output channels (one score per channel of every
:class:`~epsd_mm.pruning.channels.ChannelGroup`). It is a class registered in
:data:`CRITERIA`, declaring what it needs (:attr:`Criterion.data`) and taking
its options as keyword arguments with defaults, so both ``'prospr'`` and
``dict(type='ProsPr', num_steps=3)`` build it, and a pruner or hook needs no
per-criterion knowledge. A new criterion is one class::

    @CRITERIA.register('my_criterion')
    class MyCriterion(Criterion):
        data = 'none'
        def weight_scores(self, params, inputs):
            return {name: w.detach().abs() for name, w in params.items()}

The registry is a plain one (not MMEngine's) because the pruning core must
import without MMEngine.
"""
import inspect
from dataclasses import dataclass
from typing import (Any, Callable, ClassVar, Dict, List, Mapping, Optional,
                    Type, Union)

from torch import Tensor, nn

from ..functional import Progress

LossFn = Callable[[nn.Module, Any], Tensor]
ForwardFn = Callable[[nn.Module, Any], Any]
#: What a criterion scores on: see :attr:`Criterion.data`.
DATA_KINDS = ('batches', 'input', 'none')


@dataclass
class ScoringInputs:
    """Everything a criterion may score with; each takes what it declares.

    Attributes:
        model (nn.Module): The model, in the mode to score in.
        loss_fn (Callable, optional): ``loss_fn(model, batch) -> scalar``.
        batches (list, optional): Batches passed to ``loss_fn``.
        forward_fn (Callable, optional): ``forward_fn(model, x)`` running the
            network on a plain input tensor (data-free criteria).
        sparsity (float, optional): The target sparsity (for criteria that
            schedule intermediate masks).
        progress (Callable, optional): ``progress(message, fraction)``.
    """
    model: nn.Module
    loss_fn: Optional[LossFn] = None
    batches: Optional[List[Any]] = None
    forward_fn: Optional[ForwardFn] = None
    sparsity: Optional[float] = None
    progress: Optional[Progress] = None


class Criterion:
    """Base class of pruning criteria.

    Subclasses set :attr:`data`, implement :meth:`weight_scores` and, to
    score channels too, :meth:`channel_scores`; their options are keyword
    arguments of ``__init__`` with defaults (the registry checks them).
    """

    #: What scoring needs: ``'batches'`` (a loss and batches of data),
    #: ``'input'`` (no loss, but the network runs on an input of the data's
    #: shape: one batch, or an ``input_shape`` option) or ``'none'``.
    data: ClassVar[str] = 'batches'
    #: How global channel selection compares the channel scores of groups of
    #: different sizes: None (as they are) or ``'mean'`` (each group relative
    #: to its mean); see :func:`~epsd_mm.pruning.select_channels`.
    channel_normalization: ClassVar[Optional[str]] = None
    #: Whether the scores depend on the target sparsity (e.g. iterative
    #: SynFlow), so cached scores are only valid for the same target.
    uses_sparsity: ClassVar[bool] = False

    #: The registered name the criterion was built under (set by the
    #: registry).
    name: str = ''

    @property
    def options(self) -> Dict[str, Any]:
        """dict: The options it was built with (unset ones at their
        default), for logs and the pruning record."""
        return {
            key: getattr(self, key)
            for key in option_defaults(type(self)) if hasattr(self, key)
        }

    @classmethod
    def scores_channels(cls) -> bool:
        """Whether the criterion implements :meth:`channel_scores`."""
        return cls.channel_scores is not Criterion.channel_scores

    def batches_needed(self, num_batches: int) -> int:
        """How many batches to draw for one scoring, given the configured
        ``num_batches``: that number for data criteria; for ``'input'``
        ones 1 (the input's shape) unless built with an ``input_shape``;
        0 for the rest. Raises a fix-it error for numbers the criterion
        cannot use."""
        if self.data == 'input':
            return 0 if getattr(self, 'input_shape', None) else 1
        if self.data != 'batches':
            return 0
        if num_batches < 1:
            raise ValueError(f'criterion {self.name!r} scores on data and '
                             f'needs num_batches >= 1, got {num_batches}')
        return num_batches

    def check_inputs(self, inputs: ScoringInputs) -> None:
        """Raise if ``inputs`` lack what :attr:`data` declares."""
        if self.data == 'batches' and (inputs.loss_fn is None
                                       or not inputs.batches):
            missing = 'loss_fn' if inputs.loss_fn is None else 'batches'
            raise ValueError(
                f'criterion {self.name!r} scores on data and needs '
                f'`{missing}`, got none; pass a loss_fn and batches, or use a '
                f'data-free criterion ({", ".join(data_free_criteria())})')

    def weight_scores(self, params: Mapping[str, Tensor],
                      inputs: ScoringInputs) -> Dict[str, Tensor]:
        """Score every entry of ``params``.

        Args:
            params (Mapping[str, Tensor]): Prunable weights by name.
            inputs (ScoringInputs): What the criterion may use.

        Returns:
            dict[str, Tensor]: Score per weight name, shaped like it.
        """
        raise NotImplementedError

    def channel_scores(self, graph, inputs: ScoringInputs) -> Dict[str, Tensor]:
        """Score every channel of a :class:`~.channels.ChannelGraph`.

        Args:
            graph (ChannelGraph): The groups of the (dense) model.
            inputs (ScoringInputs): What the criterion may use.

        Returns:
            dict[str, Tensor]: 1-D score per group name.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ', '.join(f'{k}={v!r}' for k, v in self.options.items())
        return f'{type(self).__name__}({options})'


def option_defaults(cls: type) -> Dict[str, Any]:
    """The keyword options of a criterion class and their defaults."""
    return {
        name: param.default
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if name != 'self' and param.kind in (param.POSITIONAL_OR_KEYWORD,
                                             param.KEYWORD_ONLY)
    }


class CriterionRegistry:
    """Criterion classes by name; builds them from a name or a config."""

    def __init__(self) -> None:
        self._classes: Dict[str, Type[Criterion]] = {}
        self._canonical: Dict[Type[Criterion], str] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Register a :class:`Criterion` subclass under ``name`` and its
        class name (``criterion='prospr'`` and ``dict(type='ProsPr')``).

        Args:
            name (str): The short name, e.g. ``'prospr'``.
        """

        def add(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, Criterion)):
                raise TypeError(f'{cls!r} is not a Criterion subclass')
            if cls.data not in DATA_KINDS:
                raise ValueError(f'{cls.__name__}.data must be one of '
                                 f'{DATA_KINDS}, got {cls.data!r}')
            for key in dict.fromkeys((name, cls.__name__)):
                if key in self._classes and self._classes[key] is not cls:
                    raise KeyError(f'a criterion named {key!r} is registered '
                                   f'already ({self._classes[key].__name__})')
                self._classes[key] = cls
            self._canonical[cls] = name
            return cls

        return add

    def unregister(self, name: str) -> None:
        """Remove the criterion registered as ``name`` (both its names)."""
        cls = self.get(name)
        for key in (self._canonical.pop(cls), cls.__name__):
            self._classes.pop(key, None)

    @property
    def names(self) -> List[str]:
        """list[str]: The short names, sorted."""
        return sorted(self._canonical.values())

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str) -> Type[Criterion]:
        """The class registered as ``name``, or a fix-it error."""
        if name not in self._classes:
            raise ValueError(f'unknown pruning criterion {name!r}; valid '
                             f"criteria are: {', '.join(self.names)}")
        return self._classes[name]

    def build(self, cfg: Union[str, Mapping[str, Any], Criterion],
              **options: Any) -> Criterion:
        """Build a criterion.

        Args:
            cfg (str | dict | Criterion): A name (``'prospr'``), a config
                ``dict(type='ProsPr', **options)``, or a built criterion
                (returned as is; ``options`` must then be empty).
            **options: Options merged over those of ``cfg``.

        Returns:
            Criterion: The criterion.
        """
        if isinstance(cfg, Criterion):
            if options:
                raise ValueError('options were given for an already built '
                                 f'criterion {cfg!r}')
            return cfg
        if isinstance(cfg, str):
            name, given = cfg, {}
        elif isinstance(cfg, Mapping) and 'type' in cfg:
            given = {k: v for k, v in cfg.items() if k != 'type'}
            name = cfg['type']
        else:
            raise TypeError(
                "criterion must be a name like 'prospr' or a dict like "
                f"dict(type='ProsPr', num_steps=3), got {cfg!r}")
        cls = self.get(name)
        given.update(options)
        valid = option_defaults(cls)
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ValueError(
                f'criterion {self._canonical[cls]!r} takes no option(s) '
                f"{unknown}; its options are: {', '.join(valid) or 'none'}")
        criterion = cls(**given)
        criterion.name = self._canonical[cls]
        return criterion

    def channel_names(self) -> List[str]:
        """list[str]: Short names of the criteria that score channels."""
        return sorted(name for cls, name in self._canonical.items()
                      if cls.scores_channels())


#: Every criterion, by short name and class name.
CRITERIA = CriterionRegistry()


def data_free_criteria() -> List[str]:
    """Short names of the criteria that need no data."""
    return [n for n in CRITERIA.names if CRITERIA.get(n).data != 'batches']


def build_criterion(cfg: Union[str, Mapping[str, Any], Criterion],
                    **options: Any) -> Criterion:
    """Build a criterion from :data:`CRITERIA`; see
    :meth:`CriterionRegistry.build`."""
    return CRITERIA.build(cfg, **options)
