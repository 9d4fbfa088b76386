# Set-up and everyday commands. Everything runs in a local virtual environment (.venv).
# torch is installed first and pinned: the CPU build is found locally, an unpinned torch
# would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
OUT    ?= benchmark_out

.PHONY: install demo test lint format docs tutorials bench reproduce clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,dev,fleet]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/scforget benchmark --quick --out $(OUT)

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(VENV)/.docs: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[doc]"
	touch $@

# Offline build: intersphinx is switched off by SCFORGET_OFFLINE_DOCS so that -W holds.
docs: $(VENV)/.docs
	SCFORGET_OFFLINE_DOCS=1 $(BIN)/sphinx-build -M html docs docs/_build -W --keep-going

# Re-execute the tutorials in place (their stored outputs are what the docs show; a few minutes on
# 2 CPU cores, so CI does not run this: run it whenever the API a tutorial uses changes).
tutorials: $(VENV)/.docs
	cd tutorials && for nb in *.ipynb; do ../$(BIN)/jupyter execute --inplace --timeout=1200 $$nb || exit 1; done

# The benchmark scripts in benchmarks/ (quick settings; see each script's --help for the full run).
# The protocol's quick run is committed in benchmarks/results/quick and rendered as docs/benchmark_run.md.
bench: install
	$(BIN)/scforget benchmark --quick --out benchmarks/results/quick
	$(BIN)/python benchmarks/render_run_page.py benchmarks/results/quick docs/benchmark_run.md
	$(BIN)/python benchmarks/bench_cli_audit.py --epochs 100
	$(BIN)/python benchmarks/bench_attacks.py --quick --out $(OUT)/bench/attacks.md
	$(BIN)/python benchmarks/bench_guarantees.py --quick --out $(OUT)/bench/guarantees.md
	$(BIN)/python benchmarks/bench_fisher.py --quick --threads 1 --out $(OUT)/bench/fisher.md
	$(BIN)/python benchmarks/bench_audit.py --quick --out $(OUT)/bench/audit.md
	$(BIN)/python benchmarks/reproduce_study.py --quick --out $(OUT)/bench/reproduction

# the committed runs behind the docs pages "A five-seed benchmark run" and "The reference study,
# reproduced" (about 50 min on 2 CPU cores)
reproduce: install
	$(BIN)/python benchmarks/reproduce_study.py --out benchmarks/results/reproduction
	$(BIN)/scforget benchmark --forget DC --epochs 100 --seeds 0 1 2 3 4 --retrain-seeds 0 1 2 3 4 \
		--baseline-seeds 0 --dp-epsilons 10 --dp-epochs 10 --out benchmarks/results/dc_100ep_5seeds
	$(BIN)/python benchmarks/render_run_page.py benchmarks/results/dc_100ep_5seeds docs/benchmark_run_dc.md \
		--title "A five-seed benchmark run: DC, 100 epochs"
	$(BIN)/python benchmarks/render_reproduction.py benchmarks/results/dc_100ep_5seeds \
		benchmarks/results/reproduction/methods.md

clean:
	rm -rf docs/_build docs/generated docs/tutorials $(OUT)
