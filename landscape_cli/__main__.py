"""``python -m landscape_cli``."""

from .console import main

main()
