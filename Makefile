# AcousticSense: `make run` starts the web app on :8000, `make test` runs the tests.
# Both set everything up first (Debian packages, .venv, the package).
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: setup run test model bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

run: setup
	$(BIN)/acousticsense serve --host 0.0.0.0 --port $(PORT)

test: setup
	$(BIN)/python -m pytest -q

model: setup  # regenerate the corpus and retrain the built-in model (55-65 min on 2 CPU cores)
	BIN=$(BIN) bash scripts/make_model.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
