#!/usr/bin/env bash
# The demo: builds nethook, runs a busybox web server under runc on the default network, and
# reaches it from the "host". The host here is a throwaway network namespace, so the demo never
# changes this machine's own links, routes or firewall. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

need=()
for pair in runc:runc busybox:busybox-static ip:iproute2 nft:nftables nsenter:util-linux; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --locked
bin=$repo/target/release/nethook

work=$(mktemp -d /tmp/nethook-demo.XXXXXX)
ns=nethook-demo-$$
id=demo-web
cleanup() {
    runc --root "$work/runc" kill "$id" KILL >/dev/null 2>&1 || true
    runc --root "$work/runc" delete -f "$id" >/dev/null 2>&1 || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
inhost() { nsenter --net="/run/netns/$ns" "$@"; }
nh() { inhost "$bin" --config-dir "$work/etc" --run-dir "$work/run" "$@"; }

# A busybox rootfs with a page to serve.
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/www"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$work/bundle/rootfs/bin/$a"; done
echo "hello from a runc container networked by nethook" > "$work/bundle/rootfs/www/index.html"

cd "$work/bundle"
runc spec
python3 - "$bin" "$work" <<'PY'
import json, sys
bin, work = sys.argv[1], sys.argv[2]
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["httpd", "-f", "-p", "80", "-h", "/www"]
c["hostname"] = "demo-web"
c["root"]["readonly"] = False
dirs = ["--config-dir", work + "/etc", "--run-dir", work + "/run"]
c["hooks"] = {
    "createRuntime": [{"path": bin, "args": ["nethook"] + dirs + ["hook", "createRuntime"]}],
    "poststop": [{"path": bin, "args": ["nethook"] + dirs + ["hook", "poststop"]}],
}
json.dump(c, open("config.json", "w"), indent=2)
PY

echo "== runc create + start (nethook runs as the createRuntime hook)"
inhost runc --root "$work/runc" create --bundle "$work/bundle" "$id" </dev/null >"$work/ctr.log" 2>&1
inhost runc --root "$work/runc" start "$id"
echo "== nethook ps"
nh ps
ip=$(nh --format json ps | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ipv4"][0].split("/")[0])')
echo "== from the host: wget http://$ip/"
for _ in $(seq 50); do
    if out=$(inhost busybox timeout 2 busybox wget -q -O- "http://$ip/" 2>/dev/null); then break; fi
    sleep 0.1
done
echo "$out"
echo "== stop the container (poststop tears everything down)"
inhost runc --root "$work/runc" kill "$id" KILL
for _ in $(seq 50); do
    inhost runc --root "$work/runc" delete "$id" 2>/dev/null && break
    sleep 0.1
done
echo "== nethook ps after stop"
nh ps
echo "== links left in the host namespace:"
ip -n "$ns" -br link
[ -n "$out" ] && echo "demo OK"
