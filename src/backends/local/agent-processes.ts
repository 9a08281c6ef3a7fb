/**
 * Background processes, file watches and code contexts of a local sandbox, done by its agent (ciw_procs.py,
 * ciw_contexts.py) over the sandbox's channel. What processes and watches send arrives as frames of their
 * own; they come from inside the sandbox, so each is re-typed here and bounded: a process may forward at most
 * its output cap (the agent drops the rest), and a sandbox that sends more is stopped.
 */
import type { AgentConnection } from './agent-connection.js';
import { agentRequest } from '../agent/protocol.js';
import { objectOf } from '../agent/reply.js';
import type {
  BackgroundEvent,
  ContextControl,
  ContextInfo,
  ProcessControl,
  ProcessInfo,
  WatchEvent,
  WatchEventType,
} from '../processes.js';

const CONTROL_MS = 30_000;
const STREAMS = ['stdout', 'stderr', 'pty'] as const;
const WATCH_TYPES: readonly WatchEventType[] = ['create', 'write', 'remove', 'rename', 'chmod'];
/** Processes whose forwarded bytes are counted (the agent runs at most 32 at once). */
const MAX_COUNTED = 4096;

export function agentProcesses(connection: AgentConnection, maxOutputBytes: number, onViolation: (what: string) => void): ProcessControl {
  let listener: ((event: BackgroundEvent) => void) | null = null;
  const forwarded = new Map<number, number>();
  // Base64 and JSON on top of the agent's own cap, and some slack.
  const maxPerProcess = 2 * maxOutputBytes + 65_536;
  connection.onBackground = (h) => {
    const event = toEvent(h);
    if (event === null) {
      onViolation('a malformed background frame');
      return;
    }
    if (event.kind === 'output') {
      const total = (forwarded.get(event.pid) ?? 0) + event.data.length;
      if (total > maxPerProcess) {
        onViolation(`more output from process ${event.pid} than its limit`);
        return;
      }
      if (!forwarded.has(event.pid) && forwarded.size >= MAX_COUNTED) forwarded.delete(forwarded.keys().next().value as number);
      forwarded.set(event.pid, total);
    }
    if (event.kind === 'end') forwarded.delete(event.pid);
    listener?.(event);
  };
  const control = async (header: Parameters<AgentConnection['request']>[0], blob: Uint8Array | null = null) =>
    (await connection.request(header, blob, CONTROL_MS)).header;
  return {
    start: async (o) => {
      const h = await control(
        agentRequest('proc_start', {
          cmd: o.cmd,
          args: o.args,
          envs: o.envs,
          ...(o.cwd ? { cwd: o.cwd } : {}),
          ...(o.pty ? { pty: o.pty } : {}),
          stdin: o.stdin === true,
          ...(o.tag !== undefined ? { tag: o.tag } : {}),
        }),
      );
      return { pid: Number(h.pid) };
    },
    input: async (pid, data) => void (await control(agentRequest('proc_input', { pid }), data)),
    closeStdin: async (pid) => void (await control(agentRequest('proc_close_stdin', { pid }))),
    signal: async (pid, signal) => void (await control(agentRequest('proc_signal', { pid, signal }))),
    resize: async (pid, size) => void (await control(agentRequest('proc_resize', { pid, cols: size.cols, rows: size.rows }))),
    list: async () => {
      const h = await control(agentRequest('proc_list', {}));
      return (Array.isArray(h.processes) ? h.processes : []).slice(0, 64).map(toProcessInfo);
    },
    watch: async (path, recursive) => {
      const h = await control(agentRequest('watch_start', { path, recursive }));
      return { watchId: String(h.watch_id), path: String(h.path) };
    },
    unwatch: async (watchId) => void (await control(agentRequest('watch_stop', { watch_id: watchId }))),
    onEvent: (l) => {
      listener = l;
    },
  };
}

export function agentContexts(connection: AgentConnection): ContextControl {
  const control = async (header: Parameters<AgentConnection['request']>[0]) => (await connection.request(header, null, 60_000)).header;
  return {
    create: async (id, language, cwd): Promise<ContextInfo> => {
      const h = await control(agentRequest('context_create', { context: id, language, ...(cwd ? { cwd } : {}) }));
      return { id, language, cwd: String(h.cwd) };
    },
    restart: async (id) => void (await control(agentRequest('context_restart', { context: id }))),
    remove: async (id) => void (await control(agentRequest('context_remove', { context: id }))),
  };
}

function toEvent(h: Record<string, unknown>): BackgroundEvent | null {
  if (h.watch !== undefined) {
    if (typeof h.watch !== 'string' || !Array.isArray(h.events)) return null;
    const events: WatchEvent[] = [];
    for (const e of h.events.slice(0, 1000) as unknown[]) {
      const o = objectOf(e);
      const type = WATCH_TYPES.find((t) => t === o.type);
      if (!type || typeof o.name !== 'string' || typeof o.path !== 'string') return null;
      events.push({ name: o.name.slice(0, 4096), path: o.path.slice(0, 4096), type });
    }
    return { kind: 'watch', watchId: h.watch.slice(0, 64), events };
  }
  const pid = h.proc;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null;
  if (h.truncated === true) return { kind: 'truncated', pid };
  if (typeof h.end === 'object' && h.end !== null) {
    const e = h.end as Record<string, unknown>;
    return {
      kind: 'end',
      pid,
      end: {
        exitCode: Number.isSafeInteger(e.exit_code) ? Number(e.exit_code) : -1,
        exited: e.exited === true,
        status: String(e.status ?? '').slice(0, 200),
        ...(typeof e.error === 'string' ? { error: e.error.slice(0, 500) } : {}),
      },
    };
  }
  const stream = STREAMS.find((s) => s === h.stream);
  if (!stream || typeof h.data !== 'string') return null;
  return { kind: 'output', pid, stream, data: Buffer.from(h.data, 'base64') };
}

function toProcessInfo(p: unknown): ProcessInfo {
  const o = objectOf(p);
  const c = objectOf(o.config);
  const envs = objectOf(c.envs);
  return {
    pid: Number(o.pid),
    ...(typeof o.tag === 'string' ? { tag: o.tag.slice(0, 256) } : {}),
    config: {
      cmd: String(c.cmd ?? '').slice(0, 4096),
      args: (Array.isArray(c.args) ? c.args : []).slice(0, 256).map((a) => String(a).slice(0, 4096)),
      envs: Object.fromEntries(
        Object.entries(envs)
          .slice(0, 256)
          .map(([k, v]) => [k.slice(0, 256), String(v).slice(0, 4096)]),
      ),
      ...(typeof c.cwd === 'string' ? { cwd: c.cwd.slice(0, 4096) } : {}),
    },
    pty: o.pty === true,
  };
}
