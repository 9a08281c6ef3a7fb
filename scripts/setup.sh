#!/usr/bin/env bash
# Installs what the service needs on Debian/Ubuntu and builds it. Idempotent: safe to run again.
#   - Debian packages: bubblewrap (the sandbox), python3 (runs inside sandboxes) with numpy, pandas,
#     matplotlib, jinja2, requests, httpx and tabulate, procps (ps inside sandboxes), curl (the README
#     examples and their test), gcc and libc6-dev (ciw-idle, built when the service starts)
#   - npm packages from package-lock.json, then the TypeScript build (dist/)
set -euo pipefail
cd "$(dirname "$0")/.."

need_node_major=20
if ! command -v node >/dev/null 2>&1; then
  echo "setup: Node.js ${need_node_major}+ is required (https://nodejs.org or your distribution's nodejs package)" >&2
  exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt "$need_node_major" ]; then
  echo "setup: Node.js ${need_node_major}+ is required, found $(node --version)" >&2
  exit 1
fi

packages=()
command -v bwrap >/dev/null 2>&1 || packages+=(bubblewrap)
[ -x /usr/bin/python3 ] || packages+=(python3)
command -v ps >/dev/null 2>&1 || packages+=(procps)
command -v curl >/dev/null 2>&1 || packages+=(curl ca-certificates)
# A C compiler builds ciw-idle, what an idle sandbox's supervisor becomes (src/agent/ciw_idle.c), at start.
command -v cc >/dev/null 2>&1 || packages+=(gcc)
[ -e /usr/include/stdio.h ] || packages+=(libc6-dev)
# The Python inside sandboxes is the host's /usr/bin/python3: the data stack and what Dify's templates import.
for module in numpy:python3-numpy pandas:python3-pandas matplotlib:python3-matplotlib jinja2:python3-jinja2 \
              requests:python3-requests httpx:python3-httpx tabulate:python3-tabulate dill:python3-dill; do
  /usr/bin/python3 -c "import ${module%%:*}" 2>/dev/null || packages+=("${module##*:}")
done
if [ "${#packages[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# Ubuntu 23.10+ may forbid unprivileged user namespaces, which bubblewrap needs for sandboxes.
if [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null || echo 0)" = "1" ]; then
  echo "setup: warning: kernel.apparmor_restrict_unprivileged_userns=1; if the service reports that bubblewrap failed its" >&2
  echo "       self-test, run: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
echo "setup: done"
