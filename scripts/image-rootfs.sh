#!/usr/bin/env bash
# Assembles the runtime root filesystem of the eventpipe image from binaries built on
# Debian bookworm: the binaries, exactly the shared libraries `ldd` says they load (and
# the dynamic loader), the CA bundle (librdkafka's TLS), a passwd/group naming uid 65532,
# and an nsswitch.conf. Then it runs every binary's `--help` inside that tree (chroot),
# so a library ldd did not list fails the image build, not a pod.
#
# usage: scripts/image-rootfs.sh BIN_DIR ROOTFS     (run as root in the build stage)
set -euo pipefail
bin_dir=$1
rootfs=$2
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp "$bin_dir"/* "$rootfs/usr/local/bin/"

libs=$(mktemp)
for binary in "$rootfs"/usr/local/bin/*; do
  if ldd "$binary" | grep -q 'not found'; then
    echo "image-rootfs: $binary has unresolved libraries:" >&2
    ldd "$binary" >&2
    exit 1
  fi
  # Lines look like "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or
  # "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no path and is skipped.
  ldd "$binary" | grep -o '/[^ ]*' >>"$libs"
done
echo "image-rootfs: shared libraries of" "$rootfs"/usr/local/bin/*
sort -u "$libs" | while read -r lib; do
  echo "  $lib"
  # -L: copy the file a symlink names, at the path the loader asks for.
  cp -L --parents "$lib" "$rootfs"
done
rm -f "$libs"

cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

for binary in "$rootfs"/usr/local/bin/*; do
  name=$(basename "$binary")
  chroot "$rootfs" "/usr/local/bin/$name" --help >/dev/null || {
    echo "image-rootfs: /usr/local/bin/$name --help failed inside the image's root" >&2
    exit 1
  }
done
echo "image-rootfs: every binary starts with only these files"
