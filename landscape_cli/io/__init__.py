"""Files: configuration layering and the report file."""
