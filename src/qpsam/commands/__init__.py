"""Sub-commands of the ``qpsam`` command line, one module per topic.

Each module defines click commands and a ``register(group)`` function; :mod:`qpsam.cli` calls them all. Modules
import their heavy dependencies inside the command bodies so that ``qpsam --help`` stays fast.
"""
