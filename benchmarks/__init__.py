"""Benchmark sections of ``tools/benchmark.py``, one module each.

A section module defines ``SECTION`` (its name on the command line),
``run(args) -> list[tuple[str, list[str]]]`` returning ``(title, markdown
lines)`` per table, and optionally ``add_arguments(parser)`` for its own
options. Register it in :data:`SECTIONS`.
"""
from . import (deliverables, deliverables_quality, export, memory, quality,
               scoring, step, structured, structured_quality, sweep)

#: Section name -> module, in the order ``--sections all`` runs them.
SECTIONS = {
    module.SECTION: module
    for module in (scoring, memory, step, quality, export, structured,
                   structured_quality, sweep, deliverables,
                   deliverables_quality)
}
