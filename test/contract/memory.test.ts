import { backendContract } from './backend-contract.js';
import { createMemoryBackend } from '../../src/backends/memory/memory-backend.js';

backendContract('memory', () => createMemoryBackend());
