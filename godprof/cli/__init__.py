"""The command-line layer: parses options, calls the library, prints what reports return."""
