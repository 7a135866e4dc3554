"""The command line: the Typer app (options generated from the settings, one run wrapper, commands
that parse, make one library call and render) and its console-script entry point."""

from .app import app, main

__all__ = ["app", "main"]
