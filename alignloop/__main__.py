"""`python -m alignloop ...` (also what `accelerate launch -m alignloop ...` runs)."""

from alignloop.cli.main import main

main()
