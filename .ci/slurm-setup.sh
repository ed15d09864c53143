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

# No init system here, and none wanted: keep the packages' maintainer scripts from starting
# munged, slurmctld or slurmd on the machine itself.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

echo "slurm-setup: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=1200 update -qq
apt-get -o DPkg::Lock::Timeout=1200 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
