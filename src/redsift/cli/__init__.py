"""The ``redsift`` command-line interface (see :mod:`redsift.cli.main`)."""
