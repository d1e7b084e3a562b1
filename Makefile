# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases that install offline on the
# project's machines; users with their own torch can `pip install -e .`.
TORCH := torch==2.14.1 torchvision==0.29.1
OUT ?= results/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-slow bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/latentmotion reproduce --profile quick --out $(OUT)
	@echo "report: $(OUT)/report.md"

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/.installed
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) results
