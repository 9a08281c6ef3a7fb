#!/usr/bin/env bash
# Builds the real Dockerfile and checks the container from outside, as a Dify compose user runs it: the
# security options of deploy/dify/compose.yaml (the seccomp profile, /proc unmasked; no --privileged), state
# on a volume. No registry is reachable here, so the official Node image is stood in for by a local one:
# Debian bootstrapped from its packages plus this host's Node.js (passed to the build as BASE), carrying
# this host's CA trust (npm ci inside the build needs it). Runs as root with podman (and runc: crun refuses
# hybrid cgroups). Checks: health and isolation facts, stateful run_code, a chart's signed URL,
# /v1/sandbox/run with Dify's Python and Node.js runner templates, no network inside a sandbox, and a restart
# of the container keeping a paused conversation.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
WORK=${CIW_CONTAINER_WORK:-/var/tmp/ciw-container}
BASE=localhost/ciw-node-base:20
IMAGE=localhost/code-interpreter-wrapper:test
NAME=ciw-container-test
VOLUME=ciw-container-test-state
PORT=${CIW_CONTAINER_PORT:-18734}
KEY=container-test-key
URL="http://127.0.0.1:${PORT}"
say() { echo "container-test: $*"; }

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PODMAN=(podman --runtime runc)

if ! "${PODMAN[@]}" image exists "$BASE"; then
  say "bootstrapping the stand-in base image ($BASE)"
  rm -rf "$WORK/rootfs"
  mkdir -p "$WORK"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  root="$WORK/rootfs"
  mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/node_modules" "$root/usr/local/share/ca-certificates"
  cp "$(command -v node)" "$root/usr/local/bin/node"
  cp -a "$(npm root -g)/npm" "$root/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  # This host's CA trust, kept when the image's own ca-certificates package regenerates the bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-bundle.crt"
  mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  tar -C "$root" -c . | "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/host-bundle.crt' \
    --change 'CMD ["node"]' - "$BASE" >/dev/null
  rm -rf "$root"
fi

say "building the image"
"${PODMAN[@]}" build --network host --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
  --build-arg BASE="$BASE" -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }

cleanup() {
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

# The environment of deploy/dify/compose.yaml's service (its defaults), then this test's key, port and URL.
mapfile -t compose_env < <(node -e '
  const { parse } = require("yaml");
  const env = parse(require("fs").readFileSync("deploy/dify/compose.yaml", "utf8")).services["code-interpreter"].environment;
  for (const [k, v] of Object.entries(env)) console.log(`${k}=${String(v).replace(/\$\{[A-Z_]+:-([^}]*)\}/g, "$1")}`);
')
env_args=()
for kv in "${compose_env[@]}"; do env_args+=(-e "$kv"); done
# Its security options, in podman's spelling (Docker's systempaths=unconfined is podman's unmask=ALL; podman
# here has no AppArmor to unconfine).
"${PODMAN[@]}" run -d --name "$NAME" --network host \
  --security-opt seccomp="$PWD/deploy/seccomp-bwrap.json" --security-opt unmask=ALL \
  --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
  -v "$VOLUME":/var/lib/code-interpreter-wrapper \
  "${env_args[@]}" -e API_KEY="$KEY" -e PORT="$PORT" -e PUBLIC_BASE_URL="$URL" \
  "$IMAGE" >/dev/null
say "checking the container"
node scripts/container-checks.mjs "$URL" "$KEY" "$NAME"
say "passed in $(( $(date +%s) - started )) s"
