"""The pruning record: how a checkpoint was pruned, in one place.

Every hook that prunes writes its *stage* into the record of each checkpoint
it saves (its settings, how far it got, and any tensors it must keep, such
as the values gradual pruning cut); a channel-pruned model adds its slim
spec (:mod:`.slimming`). Resume checks, export, FLOP counting and the sparse
checkpoint reader all read this one record::

    checkpoint['meta']['epsd_pruning'] = {
        'format': 'epsd_mm.pruning_record', 'version': 1,
        'stages': {'EarlyPruningHook': {'config': {...},
                                        'progress': {'rounds_done': 1}}},
        'slim_spec': {...} or None,
        'state': {'GradualPruningHook': {'pruned_values': {...}}}}

Masks are not in the record: they are buffers of the model (``*_epsd_mask``
in the state dict). Checkpoints of earlier epsd_mm versions, with the record
spread over three keys (or none at all), are read too.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from torch import Tensor

from .slimming import check_slim_spec

#: ``checkpoint['meta'][RECORD_KEY]`` holds the record.
RECORD_KEY = 'epsd_pruning'
RECORD_FORMAT = 'epsd_mm.pruning_record'
RECORD_VERSION = 1
# Where epsd_mm 0.2-0.3 kept the slim spec and gradual pruning's cut values.
_LEGACY_SLIM_KEY = 'epsd_slim_spec'
_LEGACY_PRUNED_KEY = 'pruned_weight_values'


@dataclass
class PruningRecord:
    """How a model was pruned.

    Attributes:
        stages (dict[str, dict]): Per pruning hook (by class name), its
            ``config`` (settings the masks or channels depend on) and
            ``progress`` (e.g. rounds done).
        slim_spec (dict, optional): The slim spec of a channel-pruned
            model.
        state (dict[str, dict]): Per hook, tensors it keeps across
            checkpoints.
    """
    stages: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    slim_spec: Optional[dict] = None
    state: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping) -> 'PruningRecord':
        """The record of a checkpoint (empty for a dense one).

        Args:
            checkpoint (Mapping): A loaded checkpoint (a dict with ``meta``).

        Returns:
            PruningRecord: The record; layouts of older epsd_mm versions
            are converted.
        """
        meta = checkpoint.get('meta') or {}
        raw = meta.get(RECORD_KEY) or {}
        if raw.get('format') == RECORD_FORMAT:
            if raw.get('version') != RECORD_VERSION:
                raise ValueError(
                    f"pruning record version {raw.get('version')!r} is not "
                    f'supported by this epsd_mm (version {RECORD_VERSION}); '
                    'use the epsd_mm version that wrote the checkpoint')
            record = cls(
                stages=dict(raw.get('stages') or {}),
                slim_spec=raw.get('slim_spec'),
                state=dict(raw.get('state') or {}))
        else:  # epsd_mm < 0.4: hook entries at the top, other keys apart
            pruned = checkpoint.get(_LEGACY_PRUNED_KEY)
            record = cls(
                stages={k: dict(v)
                        for k, v in raw.items() if isinstance(v, Mapping)},
                slim_spec=meta.get(_LEGACY_SLIM_KEY),
                state=({
                    'GradualPruningHook': {
                        'pruned_values': dict(pruned)
                    }
                } if pruned else {}))
        if record.slim_spec is not None:
            check_slim_spec(record.slim_spec)
        return record

    def write(self, checkpoint: dict) -> None:
        """Store the record in ``checkpoint['meta']`` (older keys are
        dropped)."""
        meta = checkpoint.setdefault('meta', {})
        meta.pop(_LEGACY_SLIM_KEY, None)
        checkpoint.pop(_LEGACY_PRUNED_KEY, None)
        meta[RECORD_KEY] = dict(
            format=RECORD_FORMAT,
            version=RECORD_VERSION,
            stages=self.stages,
            slim_spec=self.slim_spec,
            state=self.state)

    @property
    def is_pruned(self) -> bool:
        """bool: Whether any stage or a slim spec is recorded."""
        return bool(self.stages) or self.slim_spec is not None

    def set_stage(self, name: str, config: Mapping[str, Any],
                  progress: Optional[Mapping[str, Any]] = None,
                  state: Optional[Mapping[str, Tensor]] = None) -> None:
        """Record (or replace) the stage of the hook ``name``."""
        self.stages[name] = dict(
            config=to_plain(config), progress=to_plain(progress or {}))
        if state:
            self.state[name] = dict(state)
        else:
            self.state.pop(name, None)

    def criteria(self) -> Dict[str, Optional[str]]:
        """dict[str, str | None]: The criterion of each stage (None where
        the stage recorded none: checkpoints of epsd_mm < 0.4)."""
        return {
            name: stage.get('config', {}).get('criterion')
            for name, stage in self.stages.items()
        }

    def summary(self) -> Dict[str, Any]:
        """The record without tensors, in plain containers (for the meta of
        exported files)."""
        return to_plain(
            dict(stages=self.stages, slim_spec=self.slim_spec))


def to_plain(value: Any) -> Any:
    """Containers of str/int/float/bool/None only (``repr`` for anything
    else), so the result loads with ``torch.load(weights_only=True)`` and
    prints as a config value.

    Args:
        value (Any): A nested structure.

    Returns:
        Any: The plain structure.
    """
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
