#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian/Ubuntu), then runs unit tests and
# the root tests (sandbox network namespaces, real runc with a busybox rootfs).
# Run as root for the root tests; as a normal user only the unit tests run, the rest skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in runc:runc crun:crun podman:podman busybox:busybox-static ip:iproute2 nft:nftables socat:socat nsenter:util-linux dig:dnsutils ethtool:ethtool iperf3:iperf3 etcd:etcd-server /usr/lib/cni/tuning:containernetworking-plugins; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing packages: ${need[*]} (run as root to install them)" >&2
    fi
fi

cargo build --locked
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"
