"""``python -m landscape_cli``."""

from landscape_cli.cli import main

main()
