# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The benchmarks need a display: use Xvfb when there is none (`make test`: scripts/test.sh).
XVFB := $(if $(DISPLAY),,xvfb-run -a -s "-screen 0 1600x1200x24")

.PHONY: setup demo demo-headless test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	$(PY) -m napari_lsr demo demo_out

demo-headless: setup
	$(PY) -m napari_lsr demo demo_out --headless

# Under Xvfb on Linux without a display, installing it when it can (scripts/test.sh).
test: setup
	VENV=$(VENV) bash scripts/test.sh $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(XVFB) $(PY) benchmarks/speed.py

clean:
	rm -rf demo_out bench_out build dist *.egg-info
