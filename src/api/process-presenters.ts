/** Background processes, watches, contexts and file entries on the wire (snake_case), for every front end. */
import type { ContextInfo, FileEntry, ProcessInfo, ProcessOutput } from '../service/sandbox-service.js';

export function outputToWire(o: ProcessOutput) {
  const text = (streams: readonly string[]) =>
    Buffer.concat(o.chunks.filter((c) => streams.includes(c.stream)).map((c) => c.data)).toString('utf8');
  return {
    pid: o.pid,
    running: o.running,
    stdout: text(['stdout']),
    stderr: text(['stderr']),
    output: text(['stdout', 'stderr', 'pty']),
    offset: o.offset,
    next: o.next,
    truncated: o.truncated,
    exit_code: o.end ? o.end.exitCode : null,
    status: o.end ? o.end.status : null,
    error: o.end?.error ?? null,
  };
}

export function processToWire(p: ProcessInfo) {
  return {
    pid: p.pid,
    ...(p.tag !== undefined ? { tag: p.tag } : {}),
    cmd: p.config.cmd,
    args: [...p.config.args],
    ...(p.config.cwd !== undefined ? { cwd: p.config.cwd } : {}),
    pty: p.pty,
  };
}

export function entryToWire(e: FileEntry) {
  return {
    name: e.name,
    path: e.path,
    type: e.type,
    size: e.size,
    modified_at: new Date(e.modifiedMs).toISOString(),
    ...(e.mode !== undefined ? { mode: e.mode } : {}),
    ...(e.permissions !== undefined ? { permissions: e.permissions } : {}),
    ...(e.owner !== undefined ? { owner: e.owner } : {}),
    ...(e.group !== undefined ? { group: e.group } : {}),
    ...(e.symlinkTarget !== undefined ? { symlink_target: e.symlinkTarget } : {}),
  };
}

export function contextToWire(c: ContextInfo) {
  return { context_id: c.id, language: c.language, cwd: c.cwd };
}
