"""Presentation: unit formatting and tables. Renderers return data or renderables; only the CLI prints."""
