/**
 * envd's process.Process service on our background processes: Start (a stream of the process's start, output
 * and end), Connect (follow a running one), List, SendInput, CloseStdin, SendSignal, Update (terminal size).
 * `commands.run()` is Start followed to the end; `background: true` keeps the handle and comes back through
 * Connect / SendSignal / SendInput.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { ProcessEnd, SandboxService } from '../service/sandbox-service.js';
import { fromSandboxPath, HOME, type SandboxTarget, bad } from './common.js';
import { openStream, requestMessage } from './connect.js';

type Msg = Record<string, unknown>;
const KEEPALIVE = { event: { keepalive: {} } };
const SIGNALS: Readonly<Record<string, string>> = { SIGNAL_SIGKILL: 'SIGKILL', SIGNAL_SIGTERM: 'SIGTERM', '9': 'SIGKILL', '15': 'SIGTERM' };

export function processMethods(service: SandboxService) {
  const ref = (t: SandboxTarget) => ({ sandboxId: t.id });

  const pidOf = async (t: SandboxTarget, m: Msg): Promise<number> => {
    const selector = obj(obj(m.process).selector ?? obj(m.process));
    if (selector.pid !== undefined) {
      const pid = Number(selector.pid);
      if (!Number.isSafeInteger(pid) || pid <= 0) throw bad('process.selector.pid must be a positive integer');
      return pid;
    }
    if (typeof selector.tag === 'string') {
      const found = (await service.processes.list(t.owner, ref(t))).find((p) => p.tag === selector.tag);
      if (!found) throw new ServiceError(ErrorCode.PROCESS_NOT_FOUND, `no running process tagged '${selector.tag.slice(0, 100)}'`);
      return found.pid;
    }
    throw bad('process.selector needs a pid or a tag');
  };

  /** Follows process `pid` into `stream` until it ends (or the client goes away). */
  const follow = async (t: SandboxTarget, pid: number, req: FastifyRequest, reply: FastifyReply, replay: boolean) => {
    const stream = openStream(req, reply, KEEPALIVE);
    stream.send({ event: { start: { pid } } });
    try {
      const stop = await service.processes.follow(
        t.owner,
        ref(t),
        pid,
        {
          output: (name, data) => stream.send({ event: { data: { [name]: data.toString('base64') } } }),
          end: (end: ProcessEnd) => {
            stream.send({
              event: {
                end: { exitCode: end.exitCode, exited: end.exited, status: end.status, ...(end.error ? { error: end.error } : {}) },
              },
            });
            stream.end();
          },
        },
        replay,
      );
      stream.onClose(stop);
    } catch (err) {
      stream.end(err);
    }
  };

  return {
    stream: {
      Start: async (t: SandboxTarget, req: FastifyRequest, reply: FastifyReply) => {
        const m = requestMessage(req);
        const p = obj(m.process);
        if (typeof p.cmd !== 'string') throw bad('process.cmd must be a string');
        const args = Array.isArray(p.args) ? p.args.map(String) : [];
        const size = obj(obj(m.pty).size);
        // The directory as the SDK named it (/home/user is a link to the workspace), and PWD with it, so that
        // `pwd` says /home/user as on E2B.
        const cwd = typeof p.cwd === 'string' && p.cwd !== '' ? p.cwd : HOME;
        const { pid } = await service.processes.start(t.owner, ref(t), {
          cmd: p.cmd,
          args,
          envs: { PWD: cwd, ...stringMap(p.envs) },
          cwd,
          ...(m.pty !== undefined && m.pty !== null ? { pty: { cols: Number(size.cols ?? 80), rows: Number(size.rows ?? 24) } } : {}),
          stdin: m.stdin === true || (m.pty !== undefined && m.pty !== null),
          ...(typeof m.tag === 'string' ? { tag: m.tag } : {}),
        });
        await follow(t, pid, req, reply, true);
      },
      Connect: async (t: SandboxTarget, req: FastifyRequest, reply: FastifyReply) => {
        const pid = await pidOf(t, requestMessage(req));
        await follow(t, pid, req, reply, false);
      },
    },
    unary: {
      List: async (t: SandboxTarget) => ({
        processes: (await service.processes.list(t.owner, ref(t))).map((p) => ({
          pid: p.pid,
          ...(p.tag !== undefined ? { tag: p.tag } : {}),
          config: {
            cmd: p.config.cmd,
            args: p.config.args,
            envs: p.config.envs,
            ...(p.config.cwd ? { cwd: fromSandboxPath(p.config.cwd) } : {}),
          },
        })),
      }),
      SendInput: async (t: SandboxTarget, m: Msg) => {
        const input = obj(m.input);
        const data = typeof input.stdin === 'string' ? input.stdin : typeof input.pty === 'string' ? input.pty : null;
        if (data === null) throw bad('input needs stdin or pty bytes (base64)');
        await service.processes.input(t.owner, ref(t), await pidOf(t, m), Buffer.from(data, 'base64'));
        return {};
      },
      CloseStdin: async (t: SandboxTarget, m: Msg) => {
        await service.processes.closeStdin(t.owner, ref(t), await pidOf(t, m));
        return {};
      },
      SendSignal: async (t: SandboxTarget, m: Msg) => {
        const signal = SIGNALS[String(m.signal)];
        if (!signal) throw bad('signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM');
        await service.processes.signal(t.owner, ref(t), await pidOf(t, m), signal);
        return {};
      },
      Update: async (t: SandboxTarget, m: Msg) => {
        const size = obj(obj(m.pty).size);
        await service.processes.resize(t.owner, ref(t), await pidOf(t, m), { cols: Number(size.cols), rows: Number(size.rows) });
        return {};
      },
    },
  };
}

function obj(v: unknown): Msg {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Msg) : {};
}

function stringMap(v: unknown): Record<string, string> {
  return Object.fromEntries(Object.entries(obj(v)).map(([k, val]) => [k, String(val)]));
}
