"""The ``jetflow`` command, one module per command: ``main`` parses and dispatches.

It sits above api/ because it composes the service (``serve``, ``replay``) as well as running
the client programs of clients/.
"""
