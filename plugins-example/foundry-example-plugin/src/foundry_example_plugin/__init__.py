"""A third-party-style Foundry plugin."""

__version__ = "0.1.0"
