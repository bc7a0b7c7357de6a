"""One YAML per GPU; loaded by godprof.gpus."""
