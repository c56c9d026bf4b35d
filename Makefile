# Two commands: `make run` starts the whole stack locally, `make test` runs every check.
# Each installs what it needs first: .venv for the app, .tools for AWS SAM CLI (which pins its own boto3).

PYTHON ?= python3
VENV := .venv
TOOLS := .tools
BIN := $(VENV)/bin
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: run test unit lint format validate bench build deploy install tools clean

run: install
	$(BIN)/python -m local $(if $(UPSTREAM),--upstream $(UPSTREAM))

test: install tools lint validate
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit tests/integration

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

validate: tools
	$(TOOLS)/bin/sam validate --lint
	$(TOOLS)/bin/cfn-lint template.yaml

build: tools
	$(TOOLS)/bin/sam build

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

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .ruff_cache
