/** The service's vocabulary: how a request names a sandbox, what it asks for, what it gets back. */
import type { RunCodeResult, RunCommandResult, OutputListener, Sandbox } from '../backends/types.js';

/** How a request names its sandbox: by id, or by conversation (created on first use when allowed). */
export interface SandboxRef {
  readonly sandboxId?: string;
  readonly conversationId?: string;
}

export interface CreateInput {
  readonly conversationId?: string;
  readonly idleTimeoutS?: number;
  readonly maxLifetimeS?: number;
  readonly env?: Readonly<Record<string, string>>;
  /** Outbound HTTP(S) through the filtering proxy. */
  readonly network?: boolean;
}

export interface RunCodeInput {
  readonly code: string;
  /** py / python / python3, js / javascript / node, bash / sh / shell. */
  readonly language?: string;
  readonly timeoutS?: number;
  readonly inlineImages?: boolean;
  readonly onOutput?: OutputListener;
}

export interface RunCommandInput {
  readonly command: string;
  readonly timeoutS?: number;
  readonly cwd?: string;
  readonly env?: Record<string, string>;
  readonly onOutput?: OutputListener;
}

/** What front ends hold of a sandbox: its id and its workspace (for links to its files). */
export interface SandboxHandle {
  readonly id: string;
  /** Absolute path of the workspace inside the sandbox. */
  readonly workspace: string;
}

/** What ran, where, and what came of it. */
export type RunOutcome =
  | { readonly sandbox: SandboxHandle; readonly runtime: 'shell'; readonly result: RunCommandResult }
  | { readonly sandbox: SandboxHandle; readonly runtime: 'python' | 'javascript'; readonly result: RunCodeResult };

export interface SandboxInfo {
  readonly id: string;
  readonly status: 'running';
  readonly backend: string;
  readonly conversationId: string | null;
  readonly createdAt: Date;
  readonly lastUsedAt: Date;
  readonly expiresAt: Date;
  readonly idleTimeoutS: number;
  readonly maxLifetimeS: number;
  readonly workspace: string;
  readonly network: boolean;
}

/** The service's own record of a live sandbox (front ends get a SandboxHandle, never this). */
export interface SandboxRecord {
  readonly id: string;
  readonly sandbox: Sandbox;
  readonly owner: string;
  readonly conversationId: string | null;
  readonly createdAtMs: number;
  lastUsedAtMs: number;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly network: boolean;
  /** Tail of the chain of calls into this sandbox: calls run one after another, never interleaved. */
  tail: Promise<unknown>;
  busy: number;
  /** Downloads through signed links in progress (anyone holding a link can start one). */
  linkDownloads: number;
}
