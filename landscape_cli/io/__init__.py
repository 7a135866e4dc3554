"""Files: configuration layering, generic HDF5 encoding and the report file."""
