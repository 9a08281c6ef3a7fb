# The Code Interpreter Wrapper as a container image, for the AgentCube backend on Kubernetes (the local
# backend needs bubblewrap and user namespaces; run it on a host with ./scripts/start.sh instead).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production PORT=8000 HOST=0.0.0.0 SANDBOX_BACKEND=agentcube
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/src/agent ./src/agent
COPY package.json ./
USER node
EXPOSE 8000
CMD ["node", "dist/server.js"]
