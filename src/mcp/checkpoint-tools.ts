/**
 * MCP tools for undo: an agent that broke its own work (overwrote a DataFrame, removed its outputs) lists the
 * checkpoints and rolls back — over the same operations as the HTTP routes.
 */
import type { TSchema } from 'typebox';
import * as S from '../api/schemas/checkpoints.js';
import { listCheckpoints, rollback } from '../api/checkpoint-operations.js';
import { checkpointToWire, rollbackToWire } from '../api/checkpoint-presenters.js';
import { SandboxRefBody } from '../api/schemas/sandboxes.js';
import { type Tool, caller, ref, text } from './tool.js';

const listTool: Tool<typeof SandboxRefBody> = {
  name: 'list_checkpoints',
  title: 'List the checkpoints (undo points)',
  description:
    'After every run_code and execute_command the sandbox keeps a checkpoint: all variables and files as they were. This ' +
    'lists them, oldest first, each with the call it was taken after, so you can choose how far to go back with rollback. ' +
    'Give sandbox_id or conversation_id.',
  inputSchema: SandboxRefBody,
  async run(a, ctx) {
    const listing = await listCheckpoints(caller(ctx), ref(a));
    const checkpoints = listing.checkpoints.map(checkpointToWire);
    const lines = checkpoints.map((c, i) => {
      const back = checkpoints.length - 1 - i + (checkpoints.at(-1)?.current ? 0 : 1);
      const after = c.after ? `${c.after.kind}${c.after.code !== undefined ? `: ${c.after.code.split('\n')[0]!.slice(0, 80)}` : ''}` : '?';
      return `${c.id} (steps_back ${back}${c.current ? ', now' : ''}${c.alive ? '' : ', GONE'}) after ${after}`;
    });
    return {
      content: [text(lines.join('\n') || listing.note || '(no checkpoint yet: one is kept after each call)')],
      structuredContent: {
        sandbox_id: listing.sandbox.id,
        kept: listing.kept,
        checkpoints,
        calls_since_newest: listing.callsSinceNewest,
        ...(listing.note ? { note: listing.note } : {}),
      },
    };
  },
};

const rollbackTool: Tool<typeof S.RollbackBody> = {
  name: 'rollback',
  title: 'Undo the last calls (variables and files)',
  description:
    'Undoes the last cell or command — or the last steps_back of them — when it broke something: the variables come ' +
    'back exactly as they were (the same objects, open files, generators), and the files too (removed files restored, ' +
    'files made since removed). With no arguments it undoes the last call; checkpoint_id (from list_checkpoints) goes ' +
    'back to that point. Processes other than the Python interpreter are not rolled back. Give sandbox_id or conversation_id.',
  inputSchema: S.RollbackBody,
  async run(a, ctx) {
    const { sandbox, result } = await rollback(caller(ctx), ref(a), a.checkpoint_id, a.steps_back);
    const wire = rollbackToWire(sandbox.id, result);
    return { content: [text(wire.notice)], structuredContent: wire };
  },
};

export const CHECKPOINT_TOOLS = [listTool, rollbackTool] as Tool<TSchema>[];
