"""Prints what a node sees: its id and size (mpi4py), and some environment variables."""

import os

from mpi4py import MPI

comm = MPI.COMM_WORLD
names = ("DISTRCOMP_RELAY", "DISTRCOMP_RELAY_SECRET", "DISTRCOMP_JOB", "PYTHONUNBUFFERED",
         "DC_TEST_A", "DC_TEST_B")
values = " ".join(f"{name}={os.environ.get(name, '-')}" for name in names)
print(f"rank {comm.Get_rank()} size {comm.Get_size()} {values}")
