"""Register every epsd_mm component at once (as mmseg's utils do)."""
from mmengine.registry import init_default_scope


def register_all_modules(init_default_scope_: bool = True) -> None:
    """Import every epsd_mm package that registers components.

    Components normally register lazily, when a config first looks one up;
    call this to have them all registered up front (e.g. to list them), and
    optionally make ``epsd_mm`` the default scope. Task modules whose
    library (mmseg, mmdet, mmpretrain) is missing are skipped and reported
    by :data:`epsd_mm.registry.UNAVAILABLE_MODULES`.

    Args:
        init_default_scope_ (bool): Whether to set ``'epsd_mm'`` as the
            default registry scope. Defaults to True.
    """
    import epsd_mm.datasets  # noqa: F401
    import epsd_mm.engine  # noqa: F401
    import epsd_mm.evaluation  # noqa: F401
    import epsd_mm.losses  # noqa: F401
    import epsd_mm.models  # noqa: F401
    import epsd_mm.sd_methods  # noqa: F401
    import epsd_mm.visualization  # noqa: F401
    if init_default_scope_:
        init_default_scope('epsd_mm')
