# citylens: `make help` lists the targets. `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SWEEP ?=
BASE ?=
HEAD ?=

.DEFAULT_GOAL := help
.PHONY: help install demo paper-synthetic smoke test test-all lint bench report same-outputs clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision first, from pip (uv/poetry would download several GB of CUDA wheels).
	$(BIN)/pip install --quiet "torch>=2.14.1" "torchvision>=0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install citylens with its dev tools (quick when up to date)

demo: $(STAMP) ## the demo sweep: 4 architectures x 2 seeds on the synthetic cities, then the sweep report
	$(BIN)/citylens-train -m experiment=demo

paper-synthetic: $(STAMP) ## the paper's 224 px on the synthetic cities: ResNet18 + Simple x 2 seeds (~45 min on 2 cores)
	$(BIN)/citylens-train -m experiment=paper_synthetic

smoke: $(STAMP) ## a one-minute single run that checks the install
	$(BIN)/citylens-train experiment=smoke

test: $(STAMP) ## the fast test suite (slow tests excluded)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) ## every test, the slow ones included
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP) ## ruff
	$(BIN)/ruff check citylens tests bench tools
	$(BIN)/ruff format --check citylens tests bench tools

# bench_resolution.py is left out: it trains whole sweeps (hours on a CPU); run it on its own (its docstring).
bench: $(STAMP) ## the benchmarks (speed and memory ratios, measured in one run each)
	@for b in bench/bench_*.py; do test $$b = bench/bench_resolution.py && continue; \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

report: $(STAMP) ## the sweep report on demand: make report SWEEP=outputs/sweeps/<name>
	@test -n "$(SWEEP)" || (echo "usage: make report SWEEP=outputs/sweeps/<name>"; exit 2)
	$(BIN)/citylens-report $(SWEEP)

same-outputs: $(STAMP) ## a smoke sweep at BASE=<rev> and at the working tree (or HEAD=<rev>): identical artefacts?
	@test -n "$(BASE)" || (echo "usage: make same-outputs BASE=<rev> [HEAD=<rev>]"; exit 2)
	$(BIN)/python tools/same_outputs.py --base $(BASE) $(if $(HEAD),--head $(HEAD))

clean: ## remove caches and build litter (keeps .venv and outputs/)
	rm -rf data_cache .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
