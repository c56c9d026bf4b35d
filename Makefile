# Two commands: `make run` starts the whole stack locally, `make test` runs every check.
# Each installs what it needs first: .venv for the app, .tools for AWS SAM CLI (which pins its own boto3).

PYTHON ?= python3
VENV := .venv
TOOLS := .tools
CHECKOV := .checkov
BIN := $(VENV)/bin
# sam build needs the Lambda runtime's Python (3.13) on PATH; pyenv keeps one here.
PY313 := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin) $(patsubst %/,%,$(dir $(shell command -v python3.13 2>/dev/null))))
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: run invoke test unit lint format openapi validate security bench build deploy install tools clean

run: install
	$(BIN)/python -m local $(if $(UPSTREAM),--upstream $(UPSTREAM)) $(ARGS)

# One invocation of one function without Docker: make invoke FUNCTION=ReadApiFunction EVENT=events/get_data.json
# [UPSTREAM=sample] [ENV_VARS=env.json]
invoke: install
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || { echo "usage: make invoke FUNCTION=ReadApiFunction EVENT=events/get_data.json"; exit 2; }
	$(BIN)/python -m local invoke $(FUNCTION) -e $(EVENT) $(if $(UPSTREAM),--upstream $(UPSTREAM)) $(if $(ENV_VARS),--env-vars $(ENV_VARS))

# The suite runs in 4 processes: most of its time is spent waiting on sockets and subprocesses. It starts
# hundreds of interpreters on the same sources, so it keeps Python's bytecode caches (gitignored) even
# where the environment turns them off.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n 4 --dist loadgroup
test: install tools lint validate security build
	$(PYTEST)

unit: install
	$(PYTEST) tests/unit tests/integration

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers functions local

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The docs function serves this file; a test fails until it is rewritten after a route changes.
openapi: install
	PYTHONPATH=layers/common/python $(BIN)/python -m aggregator.openapi > functions/docs/openapi.json

validate: tools
	$(TOOLS)/bin/sam validate --lint
	$(TOOLS)/bin/cfn-lint template.yaml

security: $(CHECKOV)/bin/.installed
	$(CHECKOV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

build: tools
	@test -n "$(PY313)" || { echo "sam build needs python3.13 on PATH (pyenv install 3.13)"; exit 1; }
	PATH="$(PY313):$$PATH" $(TOOLS)/bin/sam build

deploy: build
	$(TOOLS)/bin/sam deploy --guided

install: $(BIN)/.installed
tools: $(TOOLS)/bin/.installed

$(BIN)/.installed: requirements-dev.txt layers/common/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(TOOLS)/bin/.installed: requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r requirements-tools.txt
	touch $@

$(CHECKOV)/bin/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

clean:
	rm -rf $(VENV) $(TOOLS) $(CHECKOV) .aws-sam .pytest_cache .ruff_cache
