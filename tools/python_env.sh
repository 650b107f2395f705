# Sourced by tools/dist_*.sh and tools/slurm_*.sh: sets ROOT (the repository)
# and PYTHON, the interpreter that runs tools/*.py.
#
# PYTHON is, in order: $PYTHON if set; the venv of tools/setup_env.sh
# ($EPSD_VENV, default $ROOT/.venv) if it exists; else `python` on PATH.
# The chosen interpreter must import torch and mmengine, or we stop here
# with the fix instead of N ranks failing with "No module named torch".
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    VENV="${EPSD_VENV:-$ROOT/.venv}"
    if [[ -x "$VENV/bin/python" ]]; then
        PYTHON="$VENV/bin/python"
    else
        PYTHON=python
    fi
fi
if ! "$PYTHON" -c 'import torch, mmengine' >/dev/null 2>&1; then
    echo "error: '$PYTHON' cannot import torch and mmengine." \
        "Create the venv with tools/setup_env.sh (it lands in $ROOT/.venv," \
        "which these scripts use by default), activate an environment that" \
        "has the epsd_mm stack, or set PYTHON=/path/to/python." >&2
    exit 1
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
