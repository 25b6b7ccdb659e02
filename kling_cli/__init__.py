"""kling-cli: generate Kling AI videos from the command line."""

__version__ = "0.1.0"
