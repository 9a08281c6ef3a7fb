/**
 * The layers of src/ and the one rule between them: imports only run downward.
 *
 *   server.ts, app.ts           process and composition: may import anything
 *   http/  mcp/  dify/  e2b/    front ends: parse → operation → present; never each other, never a backend
 *   api/                        operations (one function per use case), presenters, schemas
 *   service/                    SandboxService: registry, owners, quotas, queues, lifecycle, file links
 *   backends/                   SandboxBackend and its implementations (local, agentcube, memory), the agent protocol
 *   core/, config.ts            errors, network policy; the settings
 *
 * `npm run lint` checks it (and that there are no cycles).
 */
const CORE = '^src/(core/|config\\.ts$)';
const BACKENDS = '^src/backends/';
const SERVICE = '^src/service/';
const API = '^src/api/';
const FRONTS = '^src/(http|mcp|dify|e2b)/';
const TOP = '^src/(server|app)\\.ts$';

const forbid = (name, comment, from, to) => ({ name, comment, severity: 'error', from: { path: from }, to: { path: to } });

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'Modules must not depend on each other in a circle.', from: {}, to: { circular: true } },
    forbid('core-is-the-bottom', 'core/ and config.ts import nothing of the layers above them.', CORE, `${BACKENDS}|${SERVICE}|${API}|${FRONTS}|${TOP}`),
    forbid('backends-below-service', 'Backends know nothing of the service, the operations or the front ends.', BACKENDS, `${SERVICE}|${API}|${FRONTS}|${TOP}`),
    forbid('service-below-api', 'The service knows nothing of operations, presenters or front ends.', SERVICE, `${API}|${FRONTS}|${TOP}`),
    forbid('api-below-front-ends', 'Operations and presenters know nothing of the front ends.', API, `${FRONTS}|${TOP}`),
    forbid('front-ends-use-operations', 'Front ends reach sandboxes through the operations, never a backend directly.', FRONTS, `${BACKENDS}|${TOP}`),
    forbid('http-is-not-mcp-or-dify', 'One front end does not import another.', '^src/http/', '^src/(mcp|dify|e2b)/'),
    forbid('mcp-is-not-http-or-dify', 'One front end does not import another.', '^src/mcp/', '^src/(http|dify|e2b)/'),
    forbid('dify-is-not-http-or-mcp', 'One front end does not import another.', '^src/dify/', '^src/(http|mcp|e2b)/'),
    forbid('e2b-is-not-http-mcp-or-dify', 'One front end does not import another.', '^src/e2b/', '^src/(http|mcp|dify)/'),
    {
      name: 'one-backend-not-another', severity: 'error', comment: 'A backend does not import another one.',
      from: { path: '^src/backends/(local|agentcube|memory)/' },
      to: { path: '^src/backends/(local|agentcube|memory)/', pathNot: '^src/backends/$1/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    includeOnly: '^src/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
