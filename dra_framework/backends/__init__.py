"""Backends shipped with the core distribution (registered through entry points like any other)."""
