#!/usr/bin/env bash
# Create ./.venv and install epsd_mm with the pinned OpenMMLab stack.
#
# Idempotent: a second run with unchanged requirements.txt/setup.py returns in
# seconds. The mmcv wheel (compiled ops, ~8 min on 2 cores) is cached in
# $EPSD_CACHE (default ~/.cache/epsd_mm) and reused by every clone on the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EPSD_VENV:-$ROOT/.venv}"
CACHE="${EPSD_CACHE:-$HOME/.cache/epsd_mm}"
REQ="$ROOT/requirements.txt"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

pin() { grep -E "^$1==" "$REQ" | head -n1; }

stamp="$(cat "$REQ" "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$VENV/.epsd_stamp" && "$(cat "$VENV/.epsd_stamp")" == "$stamp" ]]; then
    echo "[setup_env] $VENV is up to date"
    exit 0
fi

[[ -x "$PY" ]] || python3 -m venv "$VENV"
echo "[setup_env] installing build prerequisites and torch into $VENV"
"${PIP[@]}" install "$(pin pip || echo 'pip>=23')" 2>/dev/null || true
"${PIP[@]}" install "$(pin torch)" "$(pin torchvision)" "$(pin numpy)" \
    "$(pin setuptools)" "$(pin wheel)" "$(pin ninja)"

mmcv_pin="$(pin mmcv)"
mmcv_ver="${mmcv_pin#mmcv==}"
torch_ver="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
wheel_dir="$CACHE/wheels/torch-$torch_ver"
mkdir -p "$wheel_dir"
if ! ls "$wheel_dir"/mmcv-"$mmcv_ver"-*.whl >/dev/null 2>&1; then
    echo "[setup_env] building mmcv $mmcv_ver with ops (about 8 minutes on 2 cores)"
    build="$(mktemp -d)"
    "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation \
        "$mmcv_pin" -d "$build" -q
    tar -xzf "$build"/mmcv-"$mmcv_ver".tar.gz -C "$build"
    # torch 2.14 headers need C++20; mmcv's setup.py hard-codes c++14/17.
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$build/mmcv-$mmcv_ver/setup.py"
    (cd "$build/mmcv-$mmcv_ver" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" \
        "$PY" -m pip wheel --no-build-isolation --no-deps -w "$wheel_dir" . -q)
    rm -rf "$build"
fi

echo "[setup_env] installing pinned requirements and epsd_mm (editable)"
"${PIP[@]}" install --find-links "$wheel_dir" --no-build-isolation -r "$REQ"
"${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"
# MMEngine resolves `epsd_mm::x.py` configs under <location of the
# distribution>/epsd_mm/.mim/configs; an editable (PEP 660) install keeps its
# metadata in site-packages but the code in the repo, so point that path at
# the repo (setup.py symlinked epsd_mm/.mim/configs to configs/).
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ln -sfn "$ROOT/epsd_mm" "$site/epsd_mm"
"$PY" - <<'PYCHECK'
import mmseg.models, mmdet.models, mmpretrain.models  # noqa: F401
import torch_pruning, onnxruntime  # noqa: F401
from mmcv.ops import roi_align  # noqa: F401
import epsd_mm  # noqa: F401
from mmengine.config.utils import _get_external_cfg_base_path
from mmengine.utils import get_installed_path
_get_external_cfg_base_path(get_installed_path('epsd_mm'),
                            'deeplab_voc/epsd_dlb.py')
print('[setup_env] OpenMMLab stack with mmcv ops imports fine; '
      'epsd_mm:: configs resolve')
PYCHECK
echo "$stamp" > "$VENV/.epsd_stamp"
