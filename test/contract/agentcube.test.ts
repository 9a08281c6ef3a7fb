import { afterAll, beforeAll } from 'vitest';
import { backendContract } from './backend-contract.js';
import { FakeAgentCube } from '../helpers/fake-agentcube.js';
import { createAgentCubeBackend } from '../../src/backends/agentcube/agentcube-backend.js';

const fake = new FakeAgentCube();
beforeAll(async () => {
  await fake.start();
});
afterAll(async () => fake.stop());

backendContract('agentcube (against the fake AgentCube)', () =>
  createAgentCubeBackend({
    workloadManagerUrl: fake.url,
    routerUrl: fake.url,
    namespace: 'default',
    name: 'my-interpreter',
    createTimeoutMs: 150_000,
    requestTimeoutMs: 30_000,
    maxOutputBytes: 1024 * 1024,
    interruptGraceMs: 1000,
    cpuSecondsPerCall: 600,
  }),
);
