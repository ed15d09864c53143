#!/usr/bin/env bash
# Usage: bash .ci/apt-install.sh LABEL PACKAGE...
# Installs the Debian packages named, without letting their maintainer scripts start any daemon
# on the machine itself (the tests start their own sshd, munged, slurmctld, slurmd in network
# namespaces). Waits for another apt run's lock instead of failing.
set -euo pipefail
label="$1"
shift
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "$label: installing $*"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=1200 update -qq
apt-get -o DPkg::Lock::Timeout=1200 install -y -qq --no-install-recommends "$@" >/dev/null
