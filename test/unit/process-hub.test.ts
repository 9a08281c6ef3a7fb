/** What the service keeps of a sandbox's background work is bounded, whatever its agent sends. */
import { describe, expect, it } from 'vitest';
import { Hub, OUTPUT_TAIL_BYTES } from '../../src/service/process-hub.js';
import type { BackgroundEvent, ProcessControl } from '../../src/backends/processes.js';

function hubWithAgent(): { hub: Hub; send: (e: BackgroundEvent) => void } {
  let listener: ((e: BackgroundEvent) => void) | null = null;
  const control = { onEvent: (l: (e: BackgroundEvent) => void) => (listener = l) } as unknown as ProcessControl;
  const hub = new Hub(control, {});
  return { hub, send: (e) => listener!(e) };
}

describe('Hub', () => {
  it('keeps a bounded number of processes and tails when a subverted agent invents them', () => {
    const { hub, send } = hubWithAgent();
    const chunk = Buffer.alloc(60_000, 0x61);
    for (let pid = 2; pid < 10_000; pid++) {
      send({ kind: 'output', pid, stream: 'stdout', data: chunk });
      send({ kind: 'output', pid, stream: 'stdout', data: chunk });
      if (pid % 2 === 0) send({ kind: 'end', pid, end: { exitCode: 0, exited: true, status: 'exit status 0' } });
    }
    expect(hub.procs.size).toBeLessThanOrEqual(48);
    for (const t of hub.procs.values()) expect(t.kept).toBeLessThanOrEqual(OUTPUT_TAIL_BYTES + chunk.length);
  });

  it('keeps the last events of a watch nobody follows, and says older ones were dropped', () => {
    const { hub, send } = hubWithAgent();
    hub.watches.set('w1', { id: 'w1', path: '/workspace', events: [], overflowed: false, followers: new Set() });
    for (let i = 0; i < 5000; i++)
      send({ kind: 'watch', watchId: 'w1', events: [{ name: `f${i}`, path: `/workspace/f${i}`, type: 'create' }] });
    send({ kind: 'watch', watchId: 'unknown', events: [{ name: 'x', path: '/workspace/x', type: 'create' }] });
    const w = hub.watches.get('w1')!;
    expect(w.events).toHaveLength(1000);
    expect(w.events.at(-1)!.name).toBe('f4999');
    expect(w.overflowed).toBe(true);
    expect(hub.watches.size).toBe(1);
  });
});
