# The Code Interpreter Wrapper as a container image. By default it runs the local backend: bubblewrap sandboxes
# inside the container, with the Python data stack, per-sandbox uids (the service is the container's root) and
# the container's own cgroup as the bound of all sandboxes. It needs the options in deploy/dify/compose.yaml
# (a seccomp profile that lets bubblewrap make its namespaces, /proc unmasked), never --privileged; see
# docs/container.md. SANDBOX_BACKEND=agentcube runs the same image as the AgentCube front (deploy/kubernetes/).
# BASE: the official Node.js image; scripts/container-test.sh passes a locally built stand-in.
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --no-audit --no-fund

FROM ${BASE}
# bubblewrap makes the sandboxes; python3 and its data stack run inside them (and what Dify's Code node
# templates import); gcc and libc6-dev build ciw-idle, what an idle sandbox's supervisor becomes; curl: healthcheck.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bubblewrap python3 python3-numpy python3-pandas python3-matplotlib python3-jinja2 python3-requests \
      python3-httpx python3-tabulate python3-dill procps gcc libc6-dev ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production PORT=8000 HOST=0.0.0.0 \
    STATE_DIR=/var/lib/code-interpreter-wrapper/state SANDBOX_ROOT=/var/lib/code-interpreter-wrapper/sandboxes
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/src/agent ./src/agent
COPY package.json ./
# Paused sandboxes (their files and variables) live here: keep it on a volume so that they outlive the container.
VOLUME /var/lib/code-interpreter-wrapper
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8000/health >/dev/null || exit 1
# docker stop gives 10 s: the service pauses every live sandbox within SHUTDOWN_PAUSE_DEADLINE_S first.
STOPSIGNAL SIGTERM
CMD ["node", "dist/server.js"]
