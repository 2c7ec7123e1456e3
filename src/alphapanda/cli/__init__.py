"""The ``alphapanda`` command line."""
