"""Package data: the GPU database (one YAML per GPU)."""
