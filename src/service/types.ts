/** The service's vocabulary: how a request names a sandbox, what it asks for, what it gets back. */
import type { KernelState, RunCodeResult, RunCommandResult, OutputListener, Sandbox } from '../backends/types.js';

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
  /** The caller's own labels (E2B's metadata): kept with the sandbox, listed, filtered on. */
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface RunCodeInput {
  readonly code: string;
  /** py / python / python3, js / javascript / node, bash / sh / shell. */
  readonly language?: string;
  readonly timeoutS?: number;
  readonly inlineImages?: boolean;
  readonly onOutput?: OutputListener;
  /** A context made with SandboxProcesses.createContext (its language wins). */
  readonly context?: string;
  /** Environment variables for this call only. */
  readonly env?: Readonly<Record<string, string>>;
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

/**
 * What happened to a sandbox between calls that the next result must tell: it was resumed from a pause, or
 * it is a new sandbox in place of a conversation's sandbox that ended.
 */
export interface Lifecycle {
  readonly notice: string;
  /** False when the caller's files or variables are not all there. */
  readonly statePreserved: boolean;
  /** The conversation's sandbox this one replaces. */
  readonly previousSandboxId?: string;
}

/** What ran, where, and what came of it. */
export type RunOutcome = (
  | { readonly sandbox: SandboxHandle; readonly runtime: 'shell'; readonly result: RunCommandResult }
  | { readonly sandbox: SandboxHandle; readonly runtime: 'python' | 'javascript'; readonly result: RunCodeResult }
) & { readonly lifecycle?: Lifecycle; readonly usage?: CallUsage };

export type { CallUsage } from '../backends/types.js';
import type { CallUsage } from '../backends/types.js';

export interface SandboxInfo {
  readonly id: string;
  readonly status: 'running' | 'paused';
  /** When its stored state was saved (a paused sandbox; a running one that was paused before). */
  readonly pausedAt: Date | null;
  /** Bytes its stored state takes in STATE_DIR. */
  readonly stateBytes: number;
  readonly backend: string;
  readonly conversationId: string | null;
  readonly createdAt: Date;
  readonly lastUsedAt: Date;
  readonly expiresAt: Date;
  readonly idleTimeoutS: number;
  readonly maxLifetimeS: number;
  readonly workspace: string;
  readonly network: boolean;
  readonly metadata: Readonly<Record<string, string>>;
}

/** The service's own record of a live sandbox (front ends get a SandboxHandle, never this). */
export interface SandboxRecord {
  readonly id: string;
  /** The live sandbox; null while it is paused (its state is in STATE_DIR). */
  sandbox: Sandbox | null;
  /** Absolute path of the workspace inside the sandbox. */
  readonly workspace: string;
  readonly owner: string;
  readonly conversationId: string | null;
  readonly createdAtMs: number;
  lastUsedAtMs: number;
  /** Changed by a caller's set-timeout (E2B's setTimeout). */
  idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly network: boolean;
  /** The environment it was created with (a resumed sandbox gets it again). */
  readonly env: Readonly<Record<string, string>>;
  readonly metadata: Readonly<Record<string, string>>;
  /** When its stored state was saved, and its size and report; null when it has none. */
  pausedAtMs: number | null;
  stateBytes: number;
  kernels: readonly KernelState[];
  /** What the next run result must tell (a resume, a replacement). */
  lifecycle: Lifecycle | null;
  /** Tail of the chain of calls into this sandbox: calls run one after another, never interleaved. */
  tail: Promise<unknown>;
  busy: number;
  /** Downloads through signed links in progress (anyone holding a link can start one). */
  linkDownloads: number;
  /** Code contexts its last pause ended (their variables are not kept), for the resume's notice. */
  contextsLost?: number;
  /** It kept checkpoints (undo) when it was paused: the pause dropped them (said once, on the resume). */
  checkpointsDropped?: boolean;
}
