"""Ingest: the pipeline every reading passes (validate -> gate -> store) and its adapters."""
