# Thin wrappers over the kbn CLI. `make demo` and `make test` set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOGDIR ?= logs
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install data demo lint test test-fast check-jax-only tensorboard clean status report bench bench-cores bench-gpu \
	sweep-smoke sweep-shallow sweep-deep sweep-norms sweep-fashion sweep-answer sweep-poster-fixed sweep-poster-rates \
	sweep-ln-batch sweep-precision sweep-cnn-fashion sweep-cnn-fashion-10k poster

install: $(VENV)/.installed

# Everything the suite needs (both backends, tfds, pytest, ruff) at the versions it passed with.
# A machine that needs less installs an extra itself (README, Install): pip install '.[jax]'.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,test]'
	touch $@

# Debian packages, each only when missing (one apt-get run; one line when all are there): the real
# Fashion-MNIST (there is no download at run time), and pdflatex with booktabs, graphicx, amssymb,
# tabularx and siunitx (texlive-science) plus pdftotext, which the LaTeX report's tests compile and
# read with (they skip without them).
LATEX_DEBS := texlive-latex-base texlive-latex-recommended texlive-science poppler-utils
data:
	@need=""; \
	[ -d $(FASHION_DIR) ] || need=" dataset-fashion-mnist"; \
	{ command -v pdflatex && command -v pdftotext && kpsewhich booktabs.sty && kpsewhich siunitx.sty; } >/dev/null 2>&1 || need="$$need $(LATEX_DEBS)"; \
	if [ -z "$$need" ]; then echo "data: $(FASHION_DIR), pdflatex and pdftotext present"; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); echo "data: apt-get install$$need"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	else echo "data: no apt-get to install$$need: put the Fashion-MNIST IDX files in a folder and pass --data-dir;"; \
	  echo "      the LaTeX tests skip without pdflatex"; fi

# The main job: a small real sweep (Fashion-MNIST, ~1 min on 2 cores), its chosen learning rates,
# and where its TensorBoard logs are.
demo: sweep-smoke
	$(MAKE) --no-print-directory report SWEEP=smoke
	@echo "TensorBoard logs: $(LOGDIR)/smoke   (make tensorboard, then http://127.0.0.1:6006)"

# Each sweep resumes where it stopped when run again. WORKERS=N spreads it over N local processes.
SWEEP_ARGS = $(if $(WORKERS),--workers $(WORKERS))
sweep-smoke: install data
	$(BIN)/kbn sweep sweeps/smoke.toml --logdir $(LOGDIR)/smoke $(SWEEP_ARGS)
sweep-shallow: install
	$(BIN)/kbn sweep sweeps/thesis-shallow.toml --logdir $(LOGDIR)/thesis-shallow $(SWEEP_ARGS)
sweep-deep: install
	$(BIN)/kbn sweep sweeps/thesis-deep.toml --logdir $(LOGDIR)/thesis-deep $(SWEEP_ARGS)
# The poster (Ioffe & Szegedy 4.1 + LayerNorm): each arm's rate tuned (sweep-norms), or one fixed rate
# for all (sweep-poster-fixed); `make poster` runs both and writes each report with its pictures
# (curves, and the sigmoid-input percentiles with and without each norm).
sweep-norms: install data
	$(BIN)/kbn sweep sweeps/poster-norms.toml --logdir $(LOGDIR)/poster-norms $(SWEEP_ARGS)
sweep-poster-fixed: install data
	$(BIN)/kbn sweep sweeps/poster-fixed-lr.toml --logdir $(LOGDIR)/poster-fixed-lr $(SWEEP_ARGS)
# The fixed-rate protocol at four shared rates (lr = [0.1, 0.3, 1.0, 3.0]): where each norm wins as the rate grows.
sweep-poster-rates: install data
	$(BIN)/kbn sweep sweeps/poster-rates.toml --logdir $(LOGDIR)/poster-rates $(SWEEP_ARGS)
poster: sweep-norms sweep-poster-fixed
	$(MAKE) --no-print-directory report SWEEP=poster-norms
	$(MAKE) --no-print-directory report SWEEP=poster-fixed-lr
# LayerNorm's batch-size claim (Ba et al. 2016): the same sweep at batch 128 and at batch 4, then the
# report of the larger with the accuracy drop to the smaller per norm.
sweep-ln-batch: install data
	$(BIN)/kbn sweep sweeps/ln-batch-large.toml --logdir $(LOGDIR)/ln-batch-large $(SWEEP_ARGS)
	$(BIN)/kbn sweep sweeps/ln-batch-small.toml --logdir $(LOGDIR)/ln-batch-small $(SWEEP_ARGS)
	$(BIN)/kbn report $(LOGDIR)/ln-batch-large --compare-batch $(LOGDIR)/ln-batch-small \
		--out $(LOGDIR)/ln-batch-large/report
# Does mixed bfloat16 change the answer? The same fixed-rate CNN sweep in float32 and in mixed_bfloat16,
# then both reports (README, "Precision").
sweep-precision: install data
	$(BIN)/kbn sweep sweeps/precision-cnn.toml --logdir $(LOGDIR)/precision-cnn-float32 $(SWEEP_ARGS)
	$(BIN)/kbn sweep sweeps/precision-cnn.toml --precision mixed_bfloat16 --logdir $(LOGDIR)/precision-cnn-mixed_bfloat16 $(SWEEP_ARGS)
	$(MAKE) --no-print-directory report SWEEP=precision-cnn-float32
	$(MAKE) --no-print-directory report SWEEP=precision-cnn-mixed_bfloat16
# The thesis's shallow protocol for the CNN on 5,000 Fashion-MNIST images, shortened (its file says how)
sweep-cnn-fashion: install data
	$(BIN)/kbn sweep sweeps/cnn-fashion-subset.toml --logdir $(LOGDIR)/cnn-fashion-subset $(SWEEP_ARGS)
# The same on 10,000 images with 10-epoch final runs (about 25 minutes on 2 quiet cores)
sweep-cnn-fashion-10k: install data
	$(BIN)/kbn sweep sweeps/cnn-fashion-10k.toml --logdir $(LOGDIR)/cnn-fashion-10k $(SWEEP_ARGS)
sweep-fashion: install data
	$(BIN)/kbn sweep sweeps/fashion-full.toml --logdir $(LOGDIR)/fashion-full $(SWEEP_ARGS)
sweep-answer: install data
	$(BIN)/kbn sweep sweeps/answer-mlp.toml --logdir $(LOGDIR)/answer-mlp $(SWEEP_ARGS)

# make status SWEEP=smoke ; make report SWEEP=thesis-shallow
SWEEP ?= smoke
status: install
	$(BIN)/kbn status $(LOGDIR)/$(SWEEP)

# make tensorboard SWEEP=smoke: its final runs; ALL=1: its search trials too
tensorboard: install
	$(BIN)/kbn tensorboard $(LOGDIR)/$(SWEEP) $(if $(ALL),--all)

report: install
	$(BIN)/kbn report $(LOGDIR)/$(SWEEP) --out $(LOGDIR)/$(SWEEP)/report
	$(BIN)/kbn export $(LOGDIR)/$(SWEEP)

lint: install
	$(BIN)/ruff check .

# pytest exits 5 when it collects nothing: that is not a failure of the project.
test: install data lint
	$(BIN)/python -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc
# The tests marked slow (whole sweeps, signals, TensorFlow subprocesses) left out: for editing.
test-fast: install data
	$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# A JAX-only machine (README, Install): kbn[jax] from this checkout into a fresh venv, no TensorFlow in
# its pip list, then a run, a small sweep and its report on real Fashion-MNIST with that venv alone.
JAX_ONLY ?= /tmp/kbn-jax-only
check-jax-only: data
	rm -rf $(JAX_ONLY) && $(PYTHON) -m venv $(JAX_ONLY)/venv
	$(JAX_ONLY)/venv/bin/python -m pip install -q -c constraints.txt '.[jax]'
	@if $(JAX_ONLY)/venv/bin/python -m pip list | grep -i tensorflow; then \
	  echo "check-jax-only: kbn[jax] installed TensorFlow"; exit 1; fi
	printf '%s\n' 'name = "jax-only"' 'datasets = ["fashion_mnist"]' 'archs = ["mlp"]' 'norms = ["none", "batch"]' \
	  'optimizers = ["sgd"]' 'epochs = 1' 'seeds = [0, 1]' 'subset = 1000' '[search]' 'coarse = [0.01, 0.1]' \
	  'fine_per_side = 0' > $(JAX_ONLY)/sweep.toml
	cd $(JAX_ONLY) && export KBN_DATA_DIR=$(JAX_ONLY)/data && unset PYTHONPATH KERAS_BACKEND && \
	  venv/bin/kbn train --dataset fashion_mnist --arch mlp --norm batch --epochs 1 --subset 2000 --logdir runs && \
	  venv/bin/kbn sweep sweep.toml --logdir sweep --workers 1 && \
	  venv/bin/kbn report sweep --out sweep/report && \
	  grep -q '"backend": "jax"' runs/*/config.json
	@echo "check-jax-only: kbn[jax] trained, swept and reported without TensorFlow ($(JAX_ONLY))"

# Speed: trial-epochs per second of plain fit, the fast path and packed trials (README, Backends
# and speed). bench-gpu runs in the Python that has JAX with CUDA (a GPU host may have no
# TensorFlow; pip install '.[cuda]' is all kbn bench needs there).
# On 2 cores the full bench takes about an hour, mostly packed CNNs: BENCH_ARGS="--archs mlp,deep_mlp".
bench: install data
	$(BIN)/kbn bench --seed-ks 8 --out $(LOGDIR)/bench/cpu.md $(BENCH_ARGS)
	$(BIN)/kbn bench --sweep sweeps/smoke.toml --out $(LOGDIR)/bench/sweep.md
# The 24-cell dense-network sweep at 1 worker and at kbn's choice (about an hour and a half on 2 cores).
bench-cores: install data
	$(BIN)/kbn bench --sweep sweeps/cores-24.toml --out $(LOGDIR)/bench/cores-24.md
bench-gpu:
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} KERAS_BACKEND=jax $(PYTHON) -m kbn bench --backends jax --cnn-examples 50000 \
	  --ks 4,8,16,32,64,128 --seed-ks 8,32 --out $(LOGDIR)/bench/gpu.md $(BENCH_ARGS)


clean:
	rm -rf $(VENV) *.egg-info
