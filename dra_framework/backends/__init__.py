"""Backends shipped with the core distribution, registered through entry points like any other.

May import the contract modules at the package's top level only (``hookspecs``, ``models``,
``errors``, ``convert``, ``durable``), as a backend in its own distribution does.
"""
