"""Command-line interface: one module per sub-command, each a thin layer over the library."""
