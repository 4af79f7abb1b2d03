# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
FMNIST ?= /usr/share/datasets/fashion-mnist
STAMP   = $(VENV)/.installed-stamp

.PHONY: setup data demo lint test bench clean

setup: $(STAMP)

# The stamp is rebuilt whenever the dependency pins change, and when README.md does: the package's metadata
# (src/bagoftricks.egg-info/PKG-INFO, the installed long description) is a copy of it.
$(STAMP): pyproject.toml constraints.txt README.md
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)" >&2; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,ray,onnx,transfer]'
	@touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist when we may install it;
# otherwise `bagoftricks download` fetches the official files and checks their MD5.
data: setup
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null; \
	  else \
	    $(BIN)/bagoftricks download fashion_mnist; \
	  fi; \
	fi

# The demo trains recipes/fmnist/fast-3min.yaml: more accuracy in less time than all.yaml (benchmarks/README.md,
# "Fashion-MNIST demo"). Its train.precision auto trains in bf16 on a CPU that computes it natively (AVX-512
# BF16/AMX) and in fp32 on one that would emulate it; the run log says which.
demo: data
	$(BIN)/bagoftricks train --recipe recipes/fmnist/fast-3min.yaml --out runs/demo-$$(date +%Y%m%d-%H%M%S)

lint: setup
	$(BIN)/ruff check src tests benchmarks

# The suite runs in TEST_WORKERS processes (pytest-xdist) of one torch thread each: on 2 cores two workers
# take ~60 % of the serial time, and more threads than cores would stall OpenMP's spinning threads.
# `pytest` alone runs it serially.
TEST_WORKERS ?= 2
test: data lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

bench: data
	$(BIN)/bagoftricks bench --recipe recipes/fmnist/all.yaml

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
