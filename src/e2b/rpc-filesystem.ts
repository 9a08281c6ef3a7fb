/**
 * envd's filesystem.Filesystem service: Stat, ListDir, MakeDir, Move, Remove, and watching — WatchDir (a
 * stream) and CreateWatcher / GetWatcherEvents / RemoveWatcher (polled). Paths go in and come out under
 * /home/user; everything is done inside the sandbox by its agent.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FileEntry, SandboxService, WatchEvent } from '../service/sandbox-service.js';
import { fromSandboxPath, HOME, toSandboxPath, type SandboxTarget, bad } from './common.js';
import { openStream, requestMessage } from './connect.js';

type Msg = Record<string, unknown>;
const FILE_TYPES: Readonly<Record<string, string>> = {
  file: 'FILE_TYPE_FILE',
  directory: 'FILE_TYPE_DIRECTORY',
  symlink: 'FILE_TYPE_SYMLINK',
  other: 'FILE_TYPE_UNSPECIFIED',
};
const EVENT_TYPES: Readonly<Record<WatchEvent['type'], string>> = {
  create: 'EVENT_TYPE_CREATE',
  write: 'EVENT_TYPE_WRITE',
  remove: 'EVENT_TYPE_REMOVE',
  rename: 'EVENT_TYPE_RENAME',
  chmod: 'EVENT_TYPE_CHMOD',
};

/** EntryInfo in proto3 JSON (int64 size as a string, the time as RFC 3339). */
export function entryInfo(e: FileEntry): Msg {
  return {
    name: e.name,
    type: FILE_TYPES[e.type],
    path: fromSandboxPath(e.path),
    size: String(e.size),
    mode: e.mode ?? 0,
    permissions: e.permissions ?? '',
    owner: e.owner ?? '',
    group: e.group ?? '',
    modifiedTime: new Date(e.modifiedMs).toISOString(),
    ...(e.symlinkTarget !== undefined ? { symlinkTarget: e.symlinkTarget } : {}),
  };
}

function eventOf(e: WatchEvent): Msg {
  return { name: e.name, type: EVENT_TYPES[e.type] };
}

export function filesystemMethods(service: SandboxService) {
  const ref = (t: SandboxTarget) => ({ sandboxId: t.id });
  return {
    stream: {
      WatchDir: async (t: SandboxTarget, req: FastifyRequest, reply: FastifyReply) => {
        const m = requestMessage(req);
        const { watchId } = await service.processes.watch(t.owner, ref(t), pathOf(m.path), m.recursive === true);
        const stream = openStream(req, reply, { keepalive: {} });
        stream.send({ start: {} });
        try {
          const stop = await service.processes.followWatch(t.owner, ref(t), watchId, (events) => {
            for (const e of events) stream.send({ filesystem: eventOf(e) });
          });
          stream.onClose(() => {
            stop();
            service.processes.unwatch(t.owner, ref(t), watchId).catch(() => undefined);
          });
        } catch (err) {
          stream.end(err);
        }
      },
    },
    unary: {
      Stat: async (t: SandboxTarget, m: Msg) => ({
        entry: entryInfo((await service.files.stat(t.owner, ref(t), pathOf(m.path), false)).entry),
      }),
      ListDir: async (t: SandboxTarget, m: Msg) => {
        const depth = m.depth === undefined ? 1 : Number(m.depth);
        if (!Number.isInteger(depth) || depth < 1) throw bad('depth must be a positive integer');
        const { listing } = await service.files.list(t.owner, ref(t), pathOf(m.path), false, depth);
        return { entries: listing.entries.map(entryInfo) };
      },
      MakeDir: async (t: SandboxTarget, m: Msg) => {
        const made = await service.files.mkdir(t.owner, ref(t), pathOf(m.path));
        if (!made.created) throw new AlreadyExists(`directory ${String(m.path).slice(0, 200)} already exists`);
        return { entry: entryInfo(made.entry) };
      },
      Move: async (t: SandboxTarget, m: Msg) => {
        const { entry } = await service.files.move(t.owner, ref(t), pathOf(m.source), pathOf(m.destination));
        return { entry: entryInfo(entry) };
      },
      Remove: async (t: SandboxTarget, m: Msg) => {
        await service.files.remove(t.owner, ref(t), pathOf(m.path));
        return {};
      },
      CreateWatcher: async (t: SandboxTarget, m: Msg) => {
        const { watchId } = await service.processes.watch(t.owner, ref(t), pathOf(m.path), m.recursive === true);
        return { watcherId: watchId };
      },
      GetWatcherEvents: async (t: SandboxTarget, m: Msg) => {
        const { events } = await service.processes.watchEvents(t.owner, ref(t), String(m.watcherId ?? ''));
        return { events: events.map(eventOf) };
      },
      RemoveWatcher: async (t: SandboxTarget, m: Msg) => {
        await service.processes.unwatch(t.owner, ref(t), String(m.watcherId ?? ''));
        return {};
      },
    },
  };
}

/** Connect's already_exists (409): MakeDir of a directory that is there (the SDK answers false). */
export class AlreadyExists extends Error {
  readonly connectCode = 'already_exists';
}

function pathOf(v: unknown): string {
  if (typeof v !== 'string' || v === '') throw bad('path must be a non-empty string');
  return toSandboxPath(v.startsWith('~/') ? `${HOME}${v.slice(1)}` : v);
}
