"""One module per analysis: its settings, its result and its ``analyze_*`` function."""
