"""ipywidgets panels over a :class:`tlwidgets.Session`."""
