import { backendContract } from './backend-contract.js';
import { makeLocalBackend } from '../helpers/local.js';

backendContract('local (bubblewrap)', () => makeLocalBackend());
