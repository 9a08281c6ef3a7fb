/** The service's list of agent ops and the agent's dispatch table name the same ops. */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { AGENT_OPS } from '../../src/backends/agent/protocol.js';

const AGENT_DIR = fileURLToPath(new URL('../../src/agent/', import.meta.url));

describe('the agent protocol', () => {
  it('AGENT_OPS (protocol.ts) and OPS (ciw_supervisor.py) list the same ops', () => {
    const out = execFileSync(
      '/usr/bin/python3',
      [
        '-I',
        '-S',
        '-c',
        `import sys, json; sys.path.insert(0, ${JSON.stringify(AGENT_DIR)}); import ciw_supervisor; print(json.dumps(sorted(ciw_supervisor.OPS)))`,
      ],
      { encoding: 'utf8', env: { CIW_WORKSPACE: '/tmp' } },
    );
    expect(JSON.parse(out)).toEqual([...AGENT_OPS].sort());
  });
});
