"""The `alignloop` command line (see main.py)."""
