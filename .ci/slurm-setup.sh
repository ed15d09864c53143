#!/usr/bin/env bash
# What the Slurm tests (tests/slurm) need on a Debian CI machine, as root: Debian's Slurm
# (slurmctld, slurmd, the client commands and plugins), munge, and libpmix-dev (the unversioned
# libpmix.so that Slurm's mpi/pmix plugin loads: `srun --mpi=pmix`, which Open MPI needs).
# Installs only what is missing and never starts a daemon on the machine itself: the tests
# start their own slurmctld, slurmd and munged inside network namespaces.
# Then run the tests with DISTRCOMP_REQUIRE_SLURM=1 so that a machine that cannot build the
# test cluster fails CI instead of skipping it.
set -euo pipefail

pkgs=(slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge libpmix-dev)
need=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -eq 0 ]; then
    echo "slurm-setup: ${pkgs[*]} already present"
    exit 0
fi

bash "$(dirname "$0")/apt-install.sh" slurm-setup "${need[@]}"
