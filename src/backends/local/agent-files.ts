/**
 * The file operations of a local sandbox, done by its agent over the sandbox's pipes: write, read, open (a
 * download streamed as it comes out, held back by a slow reader), stat, list, mkdir, move, remove.
 */
import { PassThrough } from 'node:stream';
import type { AgentConnection } from './agent-connection.js';
import { agentRequest } from '../agent/protocol.js';
import { objectOf } from '../agent/reply.js';
import type { DirectoryListing, FileEntry, OpenedFile, SandboxFiles } from '../types.js';

/** Bound on a file operation's round trip; large files move at hundreds of MB/s, so this is generous. */
const FILE_OP_DEADLINE_MS = 120_000;
/** What a download may hold in memory for a reader that has not taken it yet. */
const SEND_BUFFER_BYTES = 256 * 1024;

/** Around operations that change files, for checkpoints: wait for one being kept, and ask for one after. */
export interface FileChangeHooks {
  before(): Promise<void>;
  after(kind: string, path: string): void;
}

/** `look()`: whether the agent must look at the workspace afresh before this operation (see LocalSandbox). */
export function agentFiles(connection: AgentConnection, look: () => boolean, hooks?: FileChangeHooks): SandboxFiles {
  const changing = async <T>(kind: string, path: string, op: () => Promise<T>): Promise<T> => {
    await hooks?.before();
    const result = await op();
    hooks?.after(kind, path);
    return result;
  };
  return {
    write: (path, data) =>
      changing('write_file', path, async () => {
        const { header } = await connection.request(agentRequest('write', { path, rebase: look() }), data, FILE_OP_DEADLINE_MS);
        return { path: String(header.path), size: Number(header.size) };
      }),
    read: async (path, maxBytes) => {
      const { header, blob } = await connection.request(agentRequest('read', { path, max_bytes: maxBytes }), null, FILE_OP_DEADLINE_MS);
      return { path: String(header.path), data: blob };
    },
    open: (path, maxBytes) =>
      new Promise<OpenedFile>((resolve, reject) => {
        // Bytes go on to the HTTP answer as they come out of the sandbox. What the reader has not taken yet
        // waits in `body`, up to its high-water mark; past it the sandbox is held back until the reader takes
        // some (or goes away), so a reader that never reads pins a few hundred KiB, not the file.
        const body = new PassThrough({ highWaterMark: SEND_BUFFER_BYTES });
        body.on('error', () => undefined); // a reader that went away; the sandbox still sends the rest, ignored
        let opened = false;
        const received = connection
          .request(agentRequest('read', { path, max_bytes: maxBytes }), null, FILE_OP_DEADLINE_MS, undefined, {
            start: (header, length) => {
              opened = true;
              resolve({ path: String(header.path), size: length, body, received });
            },
            chunk: (data) => {
              if (body.destroyed || body.write(data)) return null;
              return new Promise<void>((wake) => {
                const done = () => {
                  body.off('drain', done);
                  body.off('close', done);
                  wake();
                };
                body.on('drain', done);
                body.on('close', done);
              });
            },
          })
          .then(
            (reply) => {
              if (!opened) resolve({ path: String(reply.header.path), size: 0, body, received }); // an empty file
              body.end();
            },
            (err: Error) => {
              if (opened) body.destroy(err);
              else reject(err);
              throw err;
            },
          );
        received.catch(() => undefined);
      }),
    stat: async (path, options) =>
      toEntry(
        (await connection.request(agentRequest('stat', { path, follow: options?.follow ?? true }), null, FILE_OP_DEADLINE_MS)).header,
      ),
    list: async (path, options): Promise<DirectoryListing> => {
      const { header } = await connection.request(
        agentRequest('list', { path, recursive: options.recursive, limit: options.limit, depth: options.depth ?? 0 }),
        null,
        FILE_OP_DEADLINE_MS,
      );
      return {
        path: String(header.path),
        entries: (Array.isArray(header.entries) ? (header.entries as Record<string, unknown>[]) : []).map(toEntry),
        truncated: header.truncated === true,
      };
    },
    mkdir: (path) =>
      changing('make_dir', path, async () => {
        const { header } = await connection.request(agentRequest('mkdir', { path }), null, FILE_OP_DEADLINE_MS);
        return { entry: toEntry(objectOf(header.entry)), created: header.created === true };
      }),
    move: (source, destination) =>
      changing('move_file', `${source} -> ${destination}`, async () => {
        const { header } = await connection.request(agentRequest('move', { source, destination }), null, FILE_OP_DEADLINE_MS);
        return toEntry(objectOf(header.entry));
      }),
    remove: (path) =>
      changing('remove_file', path, async () => {
        await connection.request(agentRequest('remove', { path }), null, FILE_OP_DEADLINE_MS);
      }),
  };
}

function toEntry(h: Record<string, unknown>): FileEntry {
  return {
    name: String(h.name),
    path: String(h.path),
    type: (['file', 'directory', 'symlink'] as const).find((t) => t === h.type) ?? 'other',
    size: Number(h.size),
    modifiedMs: Number(h.modified_ms),
    ...(Number.isSafeInteger(h.mode) ? { mode: Number(h.mode) } : {}),
    ...(typeof h.permissions === 'string' ? { permissions: h.permissions.slice(0, 20) } : {}),
    ...(typeof h.owner === 'string' ? { owner: h.owner.slice(0, 64) } : {}),
    ...(typeof h.group === 'string' ? { group: h.group.slice(0, 64) } : {}),
    ...(typeof h.symlink_target === 'string' ? { symlinkTarget: h.symlink_target.slice(0, 4096) } : {}),
  };
}
