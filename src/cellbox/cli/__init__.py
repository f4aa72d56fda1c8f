"""The ``cellbox`` command line: one module per command group."""
