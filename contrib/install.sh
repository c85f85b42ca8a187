#!/usr/bin/env bash
# Install nethook as a system tool, or remove exactly what an earlier install put there.
#
#   contrib/install.sh               install
#   contrib/install.sh --uninstall   remove every file the install wrote (its manifest says which)
#
# Honours, as packagers expect:
#   PREFIX       default /usr/local: the binary in $PREFIX/bin, the man page, the completions
#                and the manifest under $PREFIX/share
#   DESTDIR      default empty: a staging root prepended to every path written; the installed
#                files still name the final paths ($PREFIX/bin/nethook, not $DESTDIR...)
#   NETHOOK_BIN  the binary to install (default: target/release/nethook, built if missing)
#
# What goes where:
#   $PREFIX/bin/nethook
#   /usr/share/containers/oci/hooks.d/50-nethook-*.json      podman's hooks (always there, whatever
#                                                            PREFIX: where podman looks for hooks)
#   /etc/systemd/system/nethook-restore.service              restore at boot
#   /etc/systemd/system/nethook-gc.{service,timer}           gc every 10 minutes
#   /etc/systemd/system/nethook-agent.service                overlay agent (after cluster join)
#   $PREFIX/share/man/man1/nethook.1
#   $PREFIX/share/bash-completion/completions/nethook
#   $PREFIX/share/zsh/site-functions/_nethook
#   $PREFIX/share/fish/vendor_completions.d/nethook.fish
#   $PREFIX/share/nethook/runc-config-snippet.json           the hooks for runc/crun config.json
#   $PREFIX/share/nethook/installed-files                    the manifest --uninstall reads
set -euo pipefail

usage() {
    echo "usage: [PREFIX=/usr/local] [DESTDIR=] [NETHOOK_BIN=FILE] $0 [--uninstall]" >&2
    exit 2
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

mode=install
case $# in
0) ;;
1) case $1 in
    --uninstall) mode=uninstall ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) usage ;;
    esac ;;
*) usage ;;
esac

src=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
# No trailing slashes ("/usr/local/" and "/usr/local" are one prefix).
while [ "${PREFIX%/}" != "$PREFIX" ] && [ "$PREFIX" != / ]; do PREFIX=${PREFIX%/}; done
while [ "${DESTDIR%/}" != "$DESTDIR" ]; do DESTDIR=${DESTDIR%/}; done
[ "$PREFIX" = / ] && PREFIX=
case "$PREFIX" in
'' | /*) ;;
*) die "PREFIX must be an absolute path, not '$PREFIX'; use PREFIX=/usr/local" ;;
esac
case "$PREFIX$DESTDIR" in
*$'\n'*) die "PREFIX and DESTDIR must not contain a newline" ;;
esac

hooks_dir=/usr/share/containers/oci/hooks.d
unit_dir=/etc/systemd/system
manifest=$PREFIX/share/nethook/installed-files
units=(nethook-restore.service nethook-gc.service nethook-gc.timer nethook-agent.service)

# systemctl only for a live install on a machine that runs systemd, never into a DESTDIR.
live_systemd() {
    [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# A file the manifest may name: under one of the places this script installs to.
ours() {
    case "$1" in
    "$PREFIX"/* | "$hooks_dir"/* | "$unit_dir"/*) return 0 ;;
    *) return 1 ;;
    esac
}

# A directory the manifest may name: one of those places, under one, or on the way to one.
ours_dir() {
    ours "$1" && return 0
    local p
    for p in "$PREFIX" "$hooks_dir" "$unit_dir"; do
        case "$p/" in "$1"/*) return 0 ;; esac
    done
    return 1
}

if [ "$mode" = uninstall ]; then
    [ -f "$DESTDIR$manifest" ] ||
        die "nothing to uninstall: no manifest at $DESTDIR$manifest; use the PREFIX and DESTDIR of the install"
    if live_systemd; then
        systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
    fi
    dirs=()
    while IFS= read -r line; do
        kind=${line%% *} path=${line#* }
        case $kind in
        f) ours "$path" ;;
        d) ours_dir "$path" ;;
        *) die "manifest $DESTDIR$manifest: cannot read line '$line'; remove the files by hand" ;;
        esac || die "manifest $DESTDIR$manifest names $path, outside what install.sh writes; remove it by hand"
        case $kind in
        f) rm -f -- "$DESTDIR$path" ;;
        d) dirs+=("$path") ;;
        esac
    done <"$DESTDIR$manifest"
    rm -f -- "$DESTDIR$manifest"
    # Directories the install created, deepest first, and only when nothing else is in them.
    if [ ${#dirs[@]} -gt 0 ]; then
        while IFS= read -r d; do
            rmdir -- "$DESTDIR$d" 2>/dev/null || true
        done < <(printf '%s\n' "${dirs[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
    fi
    if live_systemd; then systemctl daemon-reload || true; fi
    echo "nethook uninstalled from ${DESTDIR:-/} (PREFIX=${PREFIX:-/})"
    exit 0
fi

# ---- install ----------------------------------------------------------------------------------

bin=${NETHOOK_BIN:-$src/target/release/nethook}
if [ -z "${NETHOOK_BIN:-}" ] && [ ! -x "$bin" ]; then
    command -v cargo >/dev/null 2>&1 ||
        die "$bin is not built and cargo is not installed; build nethook first or set NETHOOK_BIN"
    echo "building nethook (cargo build --release)" >&2
    cargo build --release --locked --manifest-path "$src/Cargo.toml" >&2
fi
[ -x "$bin" ] || die "$bin is not an executable; set NETHOOK_BIN to the nethook binary"
"$bin" version >/dev/null || die "$bin does not run; set NETHOOK_BIN to a nethook binary for this machine"

[ -z "$DESTDIR" ] || mkdir -p -- "$DESTDIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The manifest of an earlier install: its directories stay ours (this run finds them existing).
declare -A old_files=()
new_dirs=()
if [ -f "$DESTDIR$manifest" ]; then
    while IFS= read -r line; do
        kind=${line%% *} path=${line#* }
        case $kind in
        f) if ours "$path"; then old_files[$path]=1; fi ;;
        d) if ours_dir "$path"; then new_dirs+=("$path"); fi ;;
        esac
    done <"$DESTDIR$manifest"
fi
new_files=()

# mkdir -p, remembering every directory it had to create.
make_dir() {
    local d=$1 missing=()
    while [ -n "$d" ] && [ "$d" != / ] && [ ! -d "$DESTDIR$d" ]; do
        missing+=("$d")
        d=$(dirname "$d")
    done
    local i
    for ((i = ${#missing[@]} - 1; i >= 0; i--)); do
        mkdir -m 0755 -- "$DESTDIR${missing[i]}"
        new_dirs+=("${missing[i]}")
    done
}

# put MODE SOURCE DEST: DEST is the final path (without DESTDIR).
put() {
    local m=$1 from=$2 to=$3
    make_dir "$(dirname "$to")"
    install -m "$m" -- "$from" "$DESTDIR$to"
    new_files+=("$to")
    unset "old_files[$to]"
}

# A text file with the default binary path replaced by this install's.
render() {
    local text
    text=$(<"$1")
    printf '%s\n' "${text//\/usr\/local\/bin\/nethook/"$PREFIX/bin/nethook"}" >"$2"
}

put 0755 "$bin" "$PREFIX/bin/nethook"

for f in "$src"/hooks/*.json; do
    name=$(basename "$f")
    render "$f" "$tmp/$name"
    if [ "$name" = runc-config-snippet.json ]; then
        put 0644 "$tmp/$name" "$PREFIX/share/nethook/$name"
    else
        put 0644 "$tmp/$name" "$hooks_dir/$name"
    fi
done

for u in "${units[@]}"; do
    render "$src/contrib/systemd/$u" "$tmp/$u"
    put 0644 "$tmp/$u" "$unit_dir/$u"
done

"$bin" man >"$tmp/nethook.1"
put 0644 "$tmp/nethook.1" "$PREFIX/share/man/man1/nethook.1"
"$bin" completions bash >"$tmp/nethook.bash"
put 0644 "$tmp/nethook.bash" "$PREFIX/share/bash-completion/completions/nethook"
"$bin" completions zsh >"$tmp/_nethook"
put 0644 "$tmp/_nethook" "$PREFIX/share/zsh/site-functions/_nethook"
"$bin" completions fish >"$tmp/nethook.fish"
put 0644 "$tmp/nethook.fish" "$PREFIX/share/fish/vendor_completions.d/nethook.fish"

# What an earlier install had and this one does not (a renamed file): remove it.
for f in "${!old_files[@]}"; do rm -f -- "$DESTDIR$f"; done

make_dir "$(dirname "$manifest")"
{
    printf 'f %s\n' "${new_files[@]}"
    printf '%s\n' "${new_dirs[@]}" | awk 'NF && !seen[$0]++ { print "d " $0 }'
} >"$tmp/installed-files"
install -m 0644 -- "$tmp/installed-files" "$DESTDIR$manifest"

if live_systemd; then
    systemctl daemon-reload || true
fi
echo "nethook installed into ${DESTDIR:-/} (PREFIX=${PREFIX:-/}); $((${#new_files[@]} + 1)) files, listed in $DESTDIR$manifest"
if [ -z "$DESTDIR" ]; then
    echo "next: systemctl enable --now nethook-restore.service nethook-gc.timer" >&2
fi
