"""Turn a training config into the config of the deployed network.

The deployed network is the trained one without what only training needs:
no pruning or self-distillation hooks, and a plain model in place of the
self-distilling wrapper. When nothing else of ``epsd_mm`` is left, the
default scope becomes the model's package (``mmseg``), so mmseg alone can
build and run it.
"""
import copy
import inspect
from functools import lru_cache
from typing import Any, FrozenSet, Iterator, List, Optional, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.registry import Registry

SCOPE = 'epsd_mm'


def plain_model_cfg(model_cfg: dict) -> ConfigDict:
    """The model config without self-distillation.

    All knowledge of how a self-distilling model is configured lives here:

    * a self-distilling *builder* of epsd_mm (``SelfDistillSegmentor``,
      ``SelfDistillClassifier``: a registered function with an ``sd``
      argument and one ``<kind>_type`` argument naming the class it wraps;
      not ``SlimModel``, which stays as it is) becomes that
      class: ``type`` takes the config's ``<kind>_type``, or the builder's
      default (``'mmseg.EncoderDecoder'``, ``'mmpretrain.ImageClassifier'``);
    * the SD method (``sd``) is dropped;
    * other models (e.g. ``epsd_mm.CAMLocalizer``, plain mmseg segmentors)
      keep their type.

    Args:
        model_cfg (dict): The ``model`` of a training config.

    Returns:
        ConfigDict: A copy without self-distillation.
    """
    cfg = ConfigDict(copy.deepcopy(dict(model_cfg)))
    wrapped = _wrapped_type_arg(cfg.get('type'))
    if wrapped is not None:
        key, default = wrapped
        cfg['type'] = cfg.pop(key, default)
    cfg.pop('sd', None)
    return cfg


def _wrapped_type_arg(obj_type: Any) -> Optional[Tuple[str, Any]]:
    """``(name, default)`` of the ``*_type`` argument of a self-distilling
    builder of epsd_mm; None for any other model type."""
    if isinstance(obj_type, str):
        prefix, name = Registry.split_scope_key(obj_type)
        if prefix not in (None, SCOPE):
            return None
        from epsd_mm.registry import MODELS
        MODELS.import_from_location()
        obj_type = MODELS.module_dict.get(name)
    if not inspect.isfunction(obj_type):  # classes are the model itself
        return None
    params = inspect.signature(obj_type).parameters
    args = [param for name, param in params.items() if name.endswith('_type')]
    if len(args) != 1 or 'sd' not in params:
        return None
    return args[0].name, args[0].default


def _type_name(obj_type: Any) -> Optional[str]:
    """``'EncoderDecoder'`` for ``'mmseg.EncoderDecoder'``, a class's name
    for a class."""
    if isinstance(obj_type, str):
        return Registry.split_scope_key(obj_type)[1]
    return getattr(obj_type, '__name__', None)


@lru_cache(maxsize=None)
def _epsd_mm_names() -> FrozenSet[str]:
    """Names registered by epsd_mm itself (not inherited from parents)."""
    from epsd_mm import registry as registries
    names = set()
    for value in vars(registries).values():
        if isinstance(value, Registry) and value.scope == SCOPE:
            value.import_from_location()
            names.update(value.module_dict)
    return frozenset(names)


def _is_epsd_mm_type(cfg: dict, scope: Optional[str]) -> bool:
    """Whether ``cfg`` builds an epsd_mm component (``scope``: the scope it
    is built in when its type has no prefix)."""
    obj_type = cfg.get('type')
    if not isinstance(obj_type, str):
        return getattr(obj_type, '__module__', '').startswith(SCOPE)
    prefix, name = Registry.split_scope_key(obj_type)
    return (prefix or cfg.get('_scope_',
                              scope)) == SCOPE and (name in _epsd_mm_names())


def _walk(node: Any, scope: Optional[str]) -> Iterator[Tuple[dict, str]]:
    """Every dict with a ``type`` under ``node``, with the scope it is
    built in (a ``_scope_`` applies to everything built inside)."""
    if isinstance(node, dict):
        scope = node.get('_scope_', scope)
        if 'type' in node:
            yield node, scope
        for value in node.values():
            yield from _walk(value, scope)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value, scope)


def _needs_epsd_mm_scope(cfg: Config) -> bool:
    """Whether some component is named without prefix and only epsd_mm
    registers it, so the default scope must stay ``epsd_mm``."""
    default_scope = cfg.get('default_scope')
    for node, scope in _walk(cfg.to_dict(), default_scope):
        obj_type = node['type']
        if (isinstance(obj_type, str)
                and Registry.split_scope_key(obj_type)[0] is None
                and _is_epsd_mm_type(node, scope)):
            return True
    return False


def _unlabeled_test_cfg(model_cfg: ConfigDict) -> Optional[str]:
    """A deployed CAM localiser sees images without labels: it must take the
    CAM of its predicted class, not of the ground truth."""
    test_cfg = model_cfg.get('test_cfg') or {}
    if (_type_name(model_cfg.get('type')) == 'CAMLocalizer'
            and test_cfg.get('cam_class') == 'gt'):
        model_cfg.test_cfg = dict(test_cfg, cam_class='pred')
        return ("model.test_cfg.cam_class: 'gt' -> 'pred' (deployed images "
                'carry no label; labelled_test_cfg keeps the trained '
                'test_cfg, which tools/deploy/test_onnx.py evaluates with)')
    return None


def _test_pipeline(cfg: Config) -> Optional[list]:
    """The test dataset's pipeline (inside dataset wrappers too)."""
    from mmdet.utils import get_test_pipeline_cfg
    try:
        return get_test_pipeline_cfg(cfg)
    except (AttributeError, KeyError, RuntimeError):
        return None


def _top_level_test_pipeline(cfg: Config) -> Optional[str]:
    """``mmseg.apis.inference_model`` reads the top-level ``test_pipeline``
    (MMSegInferencer and mmdet read the test dataloader's)."""
    pipeline = _test_pipeline(cfg)
    if 'test_pipeline' in cfg or pipeline is None:
        return None
    cfg.test_pipeline = copy.deepcopy(pipeline)
    return "test_pipeline: copied from test_dataloader's (mmseg's " \
        'inference_model reads it)'


def deploy_config(cfg: Config,
                  slim_spec: Optional[dict] = None) -> Tuple[Config, List[str]]:
    """The config of the deployed (folded) network.

    Drops every hook of an epsd_mm type from ``default_hooks`` and
    ``custom_hooks`` (pruning, self-distillation), replaces the model by
    :func:`plain_model_cfg`, adds a top-level ``test_pipeline`` if there is
    none, makes a CAM localiser take its predicted class's CAM (keeping the
    trained ``model.test_cfg`` as the top-level ``labelled_test_cfg``, the
    WSOL protocol on a labelled test set), and sets the default scope to the
    plain model's package when no component needs the ``epsd_mm`` scope any
    more. A channel-pruned
    network's model becomes ``epsd_mm.SlimModel`` (see
    :func:`~epsd_mm.models.slim_model.build_slim_model`), with
    ``custom_imports`` of ``epsd_mm`` so that plain mmseg/mmdet find it.

    Args:
        cfg (Config): The training config.
        slim_spec (dict, optional): The checkpoint's slim spec. Defaults to
            None (dense architecture).

    Returns:
        tuple[Config, list[str]]: The deploy config and a description of
        every change.
    """
    cfg = copy.deepcopy(cfg)
    default_scope = cfg.get('default_scope')
    changes = []
    for key, hook in list(cfg.get('default_hooks', {}).items()):
        if isinstance(hook, dict) and _is_epsd_mm_type(hook, default_scope):
            cfg.default_hooks.pop(key)
            changes.append(f'dropped default_hooks.{key} ({hook["type"]})')
    if cfg.get('custom_hooks'):
        kept = []
        for hook in cfg.custom_hooks:
            if _is_epsd_mm_type(hook, default_scope):
                changes.append(f'dropped custom_hooks {hook["type"]}')
            else:
                kept.append(hook)
        cfg.custom_hooks = kept

    model = plain_model_cfg(cfg.model)
    if model.to_dict() != cfg.model.to_dict():
        changes.append(f'model: {cfg.model.type} -> {model.type} without '
                       'self-distillation')
    change = _unlabeled_test_cfg(model)
    if change:
        changes.append(change)
        # the labelled test set's protocol, for tools/deploy/test_onnx.py
        cfg.labelled_test_cfg = copy.deepcopy(cfg.model.test_cfg)
    cfg.model = model

    change = _top_level_test_pipeline(cfg)
    if change:
        changes.append(change)

    model_scope = Registry.split_scope_key(model.type)[0] if isinstance(
        model.type, str) else None
    if (default_scope == SCOPE and model_scope not in (None, SCOPE)
            and not _needs_epsd_mm_scope(cfg)):
        cfg.default_scope = model_scope
        changes.append(f"default_scope: '{SCOPE}' -> '{model_scope}'")
    if slim_spec is not None:
        from epsd_mm.models.slim_model import slim_model_cfg
        cfg.model = slim_model_cfg(cfg.model, slim_spec)
        imports = dict(cfg.get('custom_imports') or {})
        modules = list(imports.get('imports', []))
        if 'epsd_mm' not in modules:
            cfg.custom_imports = dict(
                imports, imports=modules + ['epsd_mm'])
        changes.append(
            f'model: {model.type} -> epsd_mm.SlimModel with the slim '
            f"architecture ({slim_spec['channels']['kept']} of "
            f"{slim_spec['channels']['total']} channels kept in scope)"
            if 'channels' in slim_spec else
            f'model: {model.type} -> epsd_mm.SlimModel (slim architecture)')
    return cfg, changes


def input_shape_from_cfg(cfg: Config) -> Tuple[int, int]:
    """Input ``(H, W)`` of the network: the data preprocessor's fixed
    ``size`` (mmseg's crop size), else the fixed-size ``Resize`` of the test
    pipeline.

    Args:
        cfg (Config): A training or deploy config.

    Returns:
        tuple[int, int]: Height and width.
    """
    size = (cfg.model.get('data_preprocessor') or {}).get('size')
    if size:
        return int(size[0]), int(size[1])
    for transform in _test_pipeline(cfg) or []:
        scale = transform.get('scale')
        if (_type_name(transform.get('type')) == 'Resize'
                and not transform.get('keep_ratio', False)
                and isinstance(scale, (tuple, list))):
            width, height = scale  # mmcv's Resize takes (w, h)
            return int(height), int(width)
    raise ValueError(
        'cannot infer the input size from the config (no fixed '
        'data_preprocessor.size and no Resize(keep_ratio=False) in the test '
        'pipeline); pass it explicitly, e.g. --shape 512 512')
