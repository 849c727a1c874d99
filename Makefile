# Thin wrappers over the kbn CLI. `make demo` and `make test` set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOGDIR ?= logs
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test tensorboard clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# Real Fashion-MNIST from Debian (there is no download at run time).
data:
	@if [ -d $(FASHION_DIR) ]; then echo "data: $(FASHION_DIR) present"; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "data: no apt-get; put the Fashion-MNIST IDX files in a folder and pass --data-dir"; fi

demo: install data
	$(BIN)/kbn train --dataset fashion_mnist --arch mlp --norm batch --optimizer adam --lr 0.001 \
	  --epochs 5 --seed 0 --logdir $(LOGDIR)/demo
	@echo "TensorBoard: $(BIN)/tensorboard --logdir $(LOGDIR)/demo   (or: make tensorboard)"

# pytest exits 5 when it collects nothing: that is not a failure of the project.
test: install data
	$(BIN)/python -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

tensorboard: install
	$(BIN)/tensorboard --logdir $(LOGDIR) --host 127.0.0.1

clean:
	rm -rf $(VENV) *.egg-info
