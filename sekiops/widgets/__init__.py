"""Notebook widgets (ipywidgets and matplotlib are imported lazily, inside the functions)."""
