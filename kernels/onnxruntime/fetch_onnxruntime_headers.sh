#!/usr/bin/env bash
# Fetches onnxruntime's C/C++ headers (1.21) into DEST/include, for building libtofu_edge_ort.so:
#
#   kernels/onnxruntime/fetch_onnxruntime_headers.sh build/onnxruntime-headers   # prints .../include
#
# No PyPI package ships these headers; Debian trixie's libonnxruntime-dev does (an 85 kB .deb). This downloads
# that one package with apt-get into a private apt state under DEST (its own source list and cache: nothing is
# installed, nothing under /etc or /var is written) and unpacks it with dpkg-deb. It runs as root on a Debian
# or Ubuntu machine that has Debian's archive keyring (Debian images do); elsewhere, take the include/ folder
# of an onnxruntime release tarball (https://github.com/microsoft/onnxruntime/releases) and pass it as
# -DONNXRUNTIME_INCLUDE_DIR.
#
# Idempotent: when DEST/include/onnxruntime_cxx_api.h exists it only prints the folder. The headers land there
# only once complete. Progress goes to stderr, the include folder to stdout.
set -euo pipefail

readonly SUITE=trixie
readonly PACKAGE=libonnxruntime-dev
readonly MIRROR=http://deb.debian.org/debian
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly ELSEWHERE="take the include/ folder of an onnxruntime >= 1.21 release tarball \
(https://github.com/microsoft/onnxruntime/releases) and pass -DONNXRUNTIME_INCLUDE_DIR=<it> to cmake instead"

die() {
    echo "fetch_onnxruntime_headers.sh: $1; $ELSEWHERE" >&2
    exit 1
}

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 DEST   (the headers go to DEST/include)" >&2
    exit 2
fi
mkdir -p "$1"
dest="$(cd "$1" && pwd)"
include="$dest/include"

if [[ -f "$include/onnxruntime_cxx_api.h" ]]; then
    echo "onnxruntime headers already in $include" >&2
    echo "$include"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (not a Debian/Ubuntu machine)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (not a Debian/Ubuntu machine)"
[[ -f "$KEYRING" ]] || die "no Debian archive keyring at $KEYRING (apt-get install debian-archive-keyring)"

# A private apt state: sources, pins, package lists and cache under DEST, the machine's own left alone. Read after
# the system's configuration (-c), it also clears the hooks an image may run after `apt-get update` (Debian's
# docker images delete /var/cache/apt/*.bin there), so nothing outside DEST changes. APT::Sandbox::User root:
# DEST may not be readable by apt's _apt user.
state="$dest/apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/sources.d" "$state/preferences.d" \
    "$state/download"
printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' "$MIRROR" "$SUITE" "$KEYRING" \
    >"$state/sources.d/$SUITE.sources"
cat >"$state/apt.conf" <<EOF
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
Dir::State::Lists "$state/lists";
Dir::Etc::SourceParts "$state/sources.d";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$state/preferences.d";
Dir::Cache "$state/cache";
APT::Sandbox::User "root";
EOF
apt_options=(-c "$state/apt.conf")

echo "fetching the package lists of Debian $SUITE into $state ..." >&2
apt-get "${apt_options[@]}" update >&2 || die "apt-get update of Debian $SUITE failed (no network?)"
echo "downloading $PACKAGE ..." >&2
rm -f "$state/download/"*.deb
(cd "$state/download" && apt-get "${apt_options[@]}" download "$PACKAGE" >&2) \
    || die "apt-get download $PACKAGE from Debian $SUITE failed"
debs=("$state/download/${PACKAGE}_"*.deb)
[[ -f "${debs[0]}" ]] || die "apt-get download left no $PACKAGE .deb in $state/download"

echo "unpacking $(basename "${debs[0]}") ..." >&2
unpacked="$state/unpacked"
rm -rf "$unpacked" "$include.partial"
dpkg-deb -x "${debs[0]}" "$unpacked" || die "dpkg-deb could not unpack ${debs[0]}"
headers="$unpacked/usr/include/onnxruntime"
[[ -f "$headers/onnxruntime_cxx_api.h" ]] || die "${debs[0]} has no usr/include/onnxruntime/onnxruntime_cxx_api.h"

# Flat: DEST/include/onnxruntime_cxx_api.h (core/ keeps its subfolders), complete before it appears.
cp -R "$headers" "$include.partial"
rm -rf "$include"
mv "$include.partial" "$include"
rm -rf "$state" # the package lists (20 MB) served their purpose
version="$(grep -m1 -o 'ORT_API_VERSION [0-9]*' "$include/onnxruntime_c_api.h" || true)"
echo "onnxruntime headers ($version) in $include" >&2
echo "$include"
