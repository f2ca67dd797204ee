"""``python -m pgferry`` runs the command line."""

from pgferry.cli import main

main()
