"""Bundled architecture specs (the repository's top-level specs/ folder), found by name."""
