# One knob: PY is the project's interpreter; everything runs through the venv it lives in.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_PKGS := torch==2.13.0 -e .[dev]
STAMP := $(VENV)/.installed

.PHONY: install test demo bench results slurm-up slurm-down clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; torch is pinned in the same pip command as the rest
# so that deepspeed never pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_PKGS)
	touch $(STAMP)

test: install
	bash tests/run_tests.sh

demo: install
	$(PY) -m eval.demo

bench: install
	bash benchmarks/run_all.sh

# Tables and figures of docs/results/ from the committed raw data alone (no training; deterministic).
results: install
	bash scripts/make_results.sh

slurm-up:
	bash slurm/local/start.sh

slurm-down:
	bash slurm/local/stop.sh

clean:
	rm -rf runs/demo build *.egg-info
