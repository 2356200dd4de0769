#!/bin/sh
# Builds the container image trireme:dev locally, with no registry: FROM scratch with the
# trireme binary, the shared libraries it links (glibc, libstdc++ for RocksDB) and busybox
# (a shell and tools for health checks and for the process runtime's pods).
#
#   deploy/image/build.sh [BINARY] [TAG]      # defaults: the release build, trireme:dev
set -eu
target=${CARGO_TARGET_DIR:-/var/tmp/trireme-target}
binary=${1:-$target/release/trireme}
tag=${2:-trireme:dev}
[ -x "$binary" ] || { echo "no trireme binary at $binary (cargo build --release -p trireme)" >&2; exit 1; }
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "no static busybox at $busybox (apt-get install busybox-static)" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/var/lib/trireme" "$root/etc" "$root/root"
chmod 1777 "$root/tmp"
# Debug info is most of a debug build's size; the image does not need it.
objcopy --strip-debug "$binary" "$root/usr/local/bin/trireme"
# The dynamic loader and every library the binary needs, at the paths it looks for them.
for lib in $(ldd "$binary" | awk '$3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$busybox" "$root/bin/busybox"
for applet in sh ls cat ps kill sleep test wget nc ip ifconfig hostname env mkdir rm; do
  ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin
VOLUME /var/lib/trireme
ENTRYPOINT ["/usr/local/bin/trireme"]
CMD ["--help"]
DOCKERFILE
if ! log=$(docker build --quiet --label org.trireme.image=1 --tag "$tag" "$context" 2>&1); then
  echo "$log" >&2
  exit 1
fi
echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%d MB", $1 / 1000000 }'))"
