# The two commands of the README. Both are idempotent: `tools/setup_env.sh`
# returns in seconds once .venv matches requirements.txt, and reuses the cached
# mmcv wheel (~/.cache/epsd_mm) on every later install on this machine.
PY := .venv/bin/python
DEMO_CONFIG ?= configs/demo/epsd_deeplab_voc_demo.py
PYTEST_ARGS ?=

.PHONY: setup demo test

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/make_demo_data.py voc --out data/voc_demo
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir work_dirs/demo

# Two workers (one per core; every test runs torch on one thread), a test
# file's tests on one worker so its module fixtures are built once.
test: setup
	$(PY) -m pytest -n 2 --dist loadfile tests $(PYTEST_ARGS)
