"""Urbanhub: an urban data platform with data governance built into the data path."""

__version__ = "0.1.0"
