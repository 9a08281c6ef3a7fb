/** What every MCP tool is made of, and the helpers the tool modules share. */
import type { Static, TSchema } from 'typebox';
import type { Config } from '../config.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { Caller } from '../api/caller.js';

/** MCP content items (text, image, resource link, embedded resource). */
export type Content =
  | { type: 'text'; text: string }
  | { type: 'image'; data: string; mimeType: string }
  | { type: 'resource_link'; uri: string; name: string; mimeType: string; description?: string }
  | { type: 'resource'; resource: { uri: string; mimeType: string; text?: string; blob?: string } };

export interface ToolResult {
  content: Content[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
}

export interface ToolContext {
  readonly service: SandboxService;
  readonly owner: string;
  /** Absolute base for file links. */
  readonly baseUrl: string;
  readonly config: Config;
}

export interface Tool<S extends TSchema> {
  readonly name: string;
  readonly title: string;
  readonly description: string;
  readonly inputSchema: S;
  readonly outputSchema?: TSchema;
  run(args: Static<S>, ctx: ToolContext): Promise<ToolResult>;
}

export const ref = (a: { sandbox_id?: string; conversation_id?: string }) => ({
  sandboxId: a.sandbox_id,
  conversationId: a.conversation_id,
});
export const caller = (ctx: ToolContext): Caller => ({ service: ctx.service, config: ctx.config, owner: ctx.owner, baseUrl: ctx.baseUrl });
export const text = (t: string): Content => ({ type: 'text', text: t });
