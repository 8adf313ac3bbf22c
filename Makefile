.PHONY: demo serve test lint bench

demo:  ## install and start the demo city on http://127.0.0.1:8000 (SQLite)
	bash scripts/install.sh && .venv/bin/urbanhub demo

serve:
	bash scripts/install.sh && .venv/bin/urbanhub serve

test:  ## install, start local services, run the whole test suite
	bash scripts/test.sh

lint:
	.venv/bin/ruff check urbanhub tests bench && .venv/bin/mypy urbanhub

bench:
	.venv/bin/python bench/ingest.py && .venv/bin/python bench/governance.py
