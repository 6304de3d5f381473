"""A command-line client of the Deep Learning Platform: HTTP and WebSockets only, no Django."""

__version__ = "1.0"
