# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install every dependency if needed (see `setup`).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgefpga-installed
PYTEST := $(BIN)/python -m pytest

.PHONY: setup demo demo-collab test test-fast bench train train-cloud train-detector clean help

help:
	@echo "make demo       set up .venv if missing, run the main job (no board needed)"
	@echo "make demo-collab the edge-cloud learning loop: escalate, store, retrain, verify, promote (~10 min)"
	@echo "make test       set up .venv if missing, run the full test suite (what CI runs)"
	@echo "make test-fast  the suite without the slow (training / hardware simulation) tests"
	@echo "make bench      benchmarks into bench/results/*.json"
	@echo "make train      retrain the shipped ELPV model into models/zoo/elpv_defect"
	@echo "make train-cloud retrain the cloud models (escalations) into models/zoo/elpv_cloud* (~5.1 h)"
	@echo "make train-detector retrain the module detector into models/zoo/elpv_modules_detect"

setup: $(STAMP)

$(STAMP): pyproject.toml $(wildcard ros_nodes/edgefpga_msgs/msg/*.msg)
	@command -v g++ >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q g++ >/dev/null; } || \
		{ echo "g++ is needed for hls4ml's C simulation (the emulator): install it (apt-get install g++)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	$(BIN)/python ros_nodes/build_interfaces.py --venv $(VENV)
	@touch $@

demo: $(STAMP)
	$(BIN)/edgefpga-demo

demo-collab: $(STAMP)
	$(BIN)/edgefpga demo --collab

# two workers; every test that uses a shared ELPV or foreign-CNN build runs on one of them, so each
# build is made once (tests/conftest.py: xdist groups)
XDIST := -n 2 --dist loadgroup

# Tests that wait more than they compute run in a pytest of their own beside the two workers,
# instead of holding a worker idle: the federation (a SuperLink and three SuperNodes over TLS, a
# site dropped: Flower notices a dead site after two missed 30 s heartbeats) and the ROS 2 node
# tests (real time over DDS: the 30 Hz soak, hot swap, escalation deadlines), less the two that
# convert or train (own data) or share the ELPV build (the demo). Their output follows the rest;
# either run failing fails the target.
BESIDE_TESTS := tests/fleet/test_federated.py \
	$(filter-out tests/ros_nodes/test_own_data.py tests/ros_nodes/test_demo.py,$(wildcard tests/ros_nodes/test_*.py))

test: $(STAMP)
	@log=$$(mktemp); $(PYTEST) $(BESIDE_TESTS) >$$log 2>&1 & beside=$$!; trap 'kill $$beside 2>/dev/null' INT TERM; \
	$(PYTEST) $(XDIST) $(addprefix --ignore=,$(BESIDE_TESTS)) tests; rest=$$?; \
	wait $$beside; waiting=$$?; echo "== run beside the rest: $(BESIDE_TESTS)"; cat $$log; rm -f $$log; \
	[ $$rest -eq 0 ] && [ $$waiting -eq 0 ]

test-fast: $(STAMP)
	$(PYTEST) $(XDIST) -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python bench/run.py

train: $(STAMP)
	$(BIN)/edgefpga train elpv --out models/zoo/elpv_defect

# the cloud ensemble (fleet/cloud.py DEFAULT_MODELS): six EfficientNet-Lite0 runs, about 3.3 h on one core
# for the first four, 48 and 62 min on two for the fifth and sixth
train-cloud: $(STAMP)
	$(BIN)/edgefpga cloud train --out models/zoo/elpv_cloud
	$(BIN)/edgefpga cloud train --out models/zoo/elpv_cloud_160 --size 160
	$(BIN)/edgefpga cloud train --out models/zoo/elpv_cloud_160_distilled --size 160 --teachers elpv_defect elpv_defect_v1
	$(BIN)/edgefpga cloud train --out models/zoo/elpv_cloud_160_e20 --size 160 --epochs 20
	$(BIN)/edgefpga cloud train --out models/zoo/elpv_cloud_s1 --epochs 12 --seed 1 --threads 2
	$(BIN)/edgefpga cloud train --out models/zoo/elpv_cloud_300 --size 300 --seed 2 --threads 2

train-detector: $(STAMP)
	$(BIN)/edgefpga train elpv-modules --out models/zoo/elpv_modules_detect --epochs 24

clean:
	rm -rf $(VENV) demo_out .pytest_cache
