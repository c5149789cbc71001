# Two entry points for a fresh machine: `make book` and `make test`.
# Each creates (or reuses) .venv and installs requirements.txt into it first.
PY      := .venv/bin/python
STAMP   := .venv/.installed
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: test book venv bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
	$(PY) -m pip install -q -r requirements.txt -e . 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import byol_lite, torch, torchvision, jupyter_book" && touch $(STAMP)

# Every test: unit tests, then every chapter executed by nbval, a papermill run with a
# non-default parameter file, and the book build.
test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) book

# Executes every chapter on the embedded default data and renders HTML into _build/html.
book: $(STAMP)
	rm -rf _build/.jupyter_cache
	.venv/bin/jupyter-book build . --all -W -n --keep-going
	@if grep -l 'src="http[^"]*mathjax' _build/html/book/*.html; then \
	  echo "the pages above load MathJax from the network: keep sphinx-mathjax-offline in _config.yml"; exit 1; fi

# End-to-end BYOL throughput against lightly and byol-pytorch on this machine's CPU (benchmarks/README.md).
# The peers go into .venv with torch/torchvision held at requirements.txt's pins.
BENCH_STAMP := .venv/.bench-installed
$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(PY) -m pip install -q -r benchmarks/requirements.txt -c requirements.txt 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import lightly, byol_pytorch, kornia" && touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	uptime
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf _build runs
