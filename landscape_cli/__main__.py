"""``python -m landscape_cli``."""

from .cli.app import main

main()
