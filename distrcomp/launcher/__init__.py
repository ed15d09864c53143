"""The ``distrcomp`` command line: launch a program on the nodes and relay their output.

Nothing in this package initialises MPI: the launcher process only starts ``mpiexec``.
"""
