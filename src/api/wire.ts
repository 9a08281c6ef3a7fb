/** Conversion between the service's camelCase objects and the API's snake_case wire names, in one place. */
import type { SandboxInfo, SandboxRef } from '../service/sandbox-service.js';
import type { SandboxInfoWire } from './schemas/common.js';
import type { Config } from '../config.js';

export function infoToWire(info: SandboxInfo): SandboxInfoWire {
  return {
    id: info.id,
    sandbox_id: info.id,
    status: info.status,
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
