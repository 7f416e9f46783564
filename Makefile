# Two commands for a fresh machine: `make demo` and `make test`. Each builds what it needs first:
# .venv (pyspark 4.0 + delta-spark, the Databricks Runtime 17.3 LTS line) with Delta Lake's jars from Maven
# Central in .venv/jars/delta, and for the tests a second environment .venv35 (pyspark 3.5 + Delta 3.3, the
# 15.4/16.4 LTS line). Maven and pip cache what they download, so re-runs work from the caches.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DELTA_VERSION := 4.0.1
JARS := $(VENV)/jars/delta
JARS_STAMP := $(JARS)/.fetched

VENV35 := .venv35
STAMP35 := $(VENV35)/.installed
DELTA35_VERSION := 3.3.2
JARS35 := $(VENV35)/jars/delta
JARS35_STAMP := $(JARS35)/.fetched

MVN_COPY = mvn -q -B -f jars/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	-DexcludeArtifactIds=scala-library

.PHONY: demo test test-quick lint venv jars venv35 class-archive browser databricks-cli actionlint bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Delta Lake's JVM jars (delta-spark, delta-storage, antlr4-runtime) for local sessions: the native engine.
$(JARS_STAMP): jars/pom.xml
	rm -rf $(JARS) && mkdir -p $(JARS)
	$(MVN_COPY) -Ddelta.version=$(DELTA_VERSION) -Dscala.binary=2.13 -DoutputDirectory=$(abspath $(JARS))
	touch $@

venv: $(STAMP)
jars: $(STAMP) $(JARS_STAMP)

# The Spark 3.5 line, for the compatibility smoke flow (tests/e2e/test_spark35.py). After the main venv and its jars
# (order only): those are on the way to the class archive, and two Maven runs must not share ~/.m2 at once.
$(STAMP35): setup.py | $(STAMP)
	$(PYTHON) -m venv $(VENV35)
	$(VENV35)/bin/python -m pip install -q --upgrade pip
	$(VENV35)/bin/python -m pip install -q -e '.[spark35]'
	touch $(STAMP35)

$(JARS35_STAMP): jars/pom.xml | $(JARS_STAMP)
	rm -rf $(JARS35) && mkdir -p $(JARS35)
	$(MVN_COPY) -Ddelta.version=$(DELTA35_VERSION) -Dscala.binary=2.12 -DoutputDirectory=$(abspath $(JARS35))
	touch $@

venv35: $(STAMP35) $(JARS35_STAMP)

# A class-data-sharing archive for the suite's short-lived JVMs (every CLI call in the tests is a process with its
# own SparkSession): classes mapped from it instead of loaded, parsed and verified again in every process, which
# saves much of a short CLI process's CPU. Dumped from the class list in scripts/ (it needs the venv only), again
# when the venv or the list changes. Best effort: without it the tests run, slower.
CLASS_ARCHIVE := $(VENV)/jvm-classes.jsa
$(CLASS_ARCHIVE): $(STAMP) scripts/jvm_class_archive.py scripts/jvm-classes.lst.gz
	$(BIN)/python scripts/jvm_class_archive.py $@ || echo "no JVM class archive: the tests run without it"

class-archive: $(CLASS_ARCHIVE)

# Headless Chromium renders the HTML report in its test; the test fails when it is missing
# (SPARKSHIP_REQUIRE_BROWSER=1), so install it from Debian when possible.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "chromium could not be installed: the report screenshot test will fail"

# The real Databricks CLI, for tests/bundle/test_databricks_cli.py (`bundle validate --strict`, `-o json`, `bundle plan`
# against a fake workspace): `databricks` on PATH if there is one, else the project's shared build, unpacked into
# the venv. Without either the tests that need it fail under `make test` (SPARKSHIP_REQUIRE_DATABRICKS_CLI=1).
DATABRICKS_XZ := ../shared/tools/databricks-cli/databricks.xz
databricks-cli: $(STAMP)
	@if command -v databricks >/dev/null 2>&1; then echo "databricks CLI: $$(command -v databricks)"; \
	elif [ -x $(BIN)/databricks ] && [ ! $(DATABRICKS_XZ) -nt $(BIN)/databricks ]; then :; \
	elif [ -f $(DATABRICKS_XZ) ]; then \
	  xz -dc $(DATABRICKS_XZ) > $(BIN)/databricks.tmp && chmod +x $(BIN)/databricks.tmp && \
	  mv $(BIN)/databricks.tmp $(BIN)/databricks && $(BIN)/databricks --version; \
	else echo "no databricks CLI (not on PATH, no $(DATABRICKS_XZ)): the bundle CLI tests will fail"; fi

# actionlint checks .github/workflows/ (tests/bundle/test_workflows.py), built from its Go module into the venv.
ACTIONLINT_VERSION := v1.7.12
GO ?= $(shell command -v go 2>/dev/null || ls /usr/local/go/bin/go 2>/dev/null)
actionlint: $(STAMP)
	@if command -v actionlint >/dev/null 2>&1 || [ -x $(BIN)/actionlint ]; then :; \
	elif [ -n "$(GO)" ]; then \
	  GOBIN=$(abspath $(BIN)) $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION); \
	else echo "no Go toolchain: actionlint is not built and the workflow test will fail"; fi

demo: jars
	$(BIN)/sparkship demo

# Two pytest workers (pytest-xdist), a test module each at a time: much of a test's time is a JVM or a CLI
# process starting, which leaves a core free for the other worker.
# More workers than cores do not help: the suite is CPU-bound.
# Modules go out longest first (their `seconds` marker, tests/conftest.py), not by their number of tests.
PYTEST_WORKERS ?= 2
# A test past its timeout ends its worker (the thread method: stacks dumped, the worker replaced, the test
# failed) rather than leaving a worker blocked in a JVM call that never returns.
PYTEST = $(BIN)/python -m pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	--timeout-method=thread

# ruff over the repository and mypy (strict where pyproject.toml says), both configured in pyproject.toml and
# installed by the dev extra: seconds, so `make test` runs them first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Independent steps side by side (downloads from three registries, the archive's dump): the venv, Delta's jars and
# Chromium first; once the venv is there, the class archive, the Spark 3.5 environment, the Databricks CLI and
# actionlint.
test: lint
	$(MAKE) -j4 jars browser venv35 class-archive databricks-cli actionlint
	SPARKSHIP_REQUIRE_BROWSER=1 SPARKSHIP_VENV35=$(abspath $(VENV35)) \
	  SPARKSHIP_REQUIRE_DATABRICKS_CLI=1 SPARKSHIP_REQUIRE_ACTIONLINT=1 \
	  $(PYTEST) --timeout=900 --durations=20 tests

# A quick subset (modules marked `quick`, on the native engine, without tests marked `slow`): a few minutes.
test-quick: jars class-archive
	$(PYTEST) --timeout=600 --durations=15 -m "quick and not slow and not deltars" tests

bench: jars
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VENV35) .sparkship build dist src/*.egg-info
