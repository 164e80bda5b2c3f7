# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
# GUI tests need a display: use Xvfb when there is none.
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

test: setup
	QT_API=pyqt6 $(XVFB) $(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(XVFB) $(PY) benchmarks/speed.py

clean:
	rm -rf demo_out bench_out build dist *.egg-info
