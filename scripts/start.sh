#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and starts the service on the embedded local backend.
# Configuration comes from the environment (see the README's table), e.g. API_KEY=... PORT=8000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "start: note: not root; sandboxes will run as your own uid. Run as root for a dedicated uid per sandbox." >&2
fi
exec node dist/server.js
