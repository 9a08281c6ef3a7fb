/** Where the in-sandbox agent's files are: src/agent/ of this package, found from both src/ and dist/. */
import { fileURLToPath } from 'node:url';

export const AGENT_SOURCE = fileURLToPath(new URL('../../../src/agent/', import.meta.url));
