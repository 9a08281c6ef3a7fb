/** Conversion between the service's camelCase objects and the API's snake_case wire names, in one place. */
import type { Lifecycle, SandboxInfo, SandboxRef } from '../service/sandbox-service.js';
import type { KernelState } from '../backends/types.js';
import type { SandboxInfoWire } from './schemas/common.js';
import type { Config } from '../config.js';

export function infoToWire(info: SandboxInfo): SandboxInfoWire {
  return {
    id: info.id,
    sandbox_id: info.id,
    status: info.status,
    paused_at: info.pausedAt?.toISOString() ?? null,
    state_bytes: info.stateBytes,
    backend: info.backend,
    conversation_id: info.conversationId,
    created_at: info.createdAt.toISOString(),
    last_used_at: info.lastUsedAt.toISOString(),
    expires_at: info.expiresAt.toISOString(),
    idle_timeout_seconds: info.idleTimeoutS,
    max_lifetime_seconds: info.maxLifetimeS,
    workspace: info.workspace,
    network: info.network,
  };
}

export function refOf(body: { sandbox_id?: string; conversation_id?: string }): SandboxRef {
  return { sandboxId: body.sandbox_id, conversationId: body.conversation_id };
}

/** Base URL for links: PUBLIC_BASE_URL, else what the client used to reach us. */
export function baseUrl(config: Config, req: { readonly protocol: string; readonly host: string }): string {
  if (config.PUBLIC_BASE_URL) return config.PUBLIC_BASE_URL;
  return `${req.protocol}://${req.host}`;
}

/** A pause's answer: what was stored, saved and not saved. */
export function pausedToWire(info: SandboxInfo, kernels: readonly KernelState[]) {
  return {
    sandbox_id: info.id,
    status: 'paused' as const,
    state_bytes: info.stateBytes,
    saved: kernels.flatMap((k) => k.names),
    not_saved: kernels.flatMap((k) => [
      ...(k.error ? [{ name: '*', language: k.language, reason: k.error }] : []),
      ...k.skipped.map((s) => ({ name: s.name, language: k.language, reason: s.reason })),
    ]),
    info: infoToWire(info),
  };
}

/** A resume's answer. */
export function resumedToWire(info: SandboxInfo, lifecycle: Lifecycle | undefined) {
  return {
    sandbox_id: info.id,
    status: 'running' as const,
    state_preserved: lifecycle?.statePreserved ?? true,
    notice: lifecycle?.notice ?? null,
    info: infoToWire(info),
  };
}

/** A fork's answer: the new sandbox, paused with a copy of the source's state. */
export function forkedToWire(source: string, info: SandboxInfo, kernels: readonly KernelState[]) {
  const { sandbox_id, status, state_bytes, saved, not_saved, info: wire } = pausedToWire(info, kernels);
  return { sandbox_id, forked_from: source, status, state_bytes, saved, not_saved, info: wire };
}
