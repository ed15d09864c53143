#!/usr/bin/env bash
# What the multi-host tests (tests/cluster) need on a Debian CI machine, as root:
#   sshd (openssh-server), ssh + ssh-keygen (openssh-client), ip (iproute2),
#   unshare + setpriv (util-linux, essential on Debian: always there).
# Installs only what is missing; never starts a system sshd (tests start their own per namespace).
# Then run the tests with DISTRCOMP_REQUIRE_CLUSTER=1 so that a machine that cannot build the
# test hosts fails CI instead of skipping them.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null && command -v setpriv >/dev/null || need+=(util-linux)

if [ "${#need[@]}" -eq 0 ]; then
    echo "cluster-setup: openssh-server, openssh-client, iproute2, util-linux already present"
    exit 0
fi

bash "$(dirname "$0")/apt-install.sh" cluster-setup "${need[@]}"
