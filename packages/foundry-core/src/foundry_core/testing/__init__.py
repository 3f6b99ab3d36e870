"""Test support for Foundry and its plugins (a pytest plugin registered via the ``pytest11`` entry point)."""
