/** Who asks, and what answers: what every operation of one request gets from its front end. */
import type { Config } from '../config.js';
import type { SandboxService } from '../service/sandbox-service.js';

export interface Caller {
  readonly service: SandboxService;
  readonly config: Config;
  /** The owner (API key digest) the request acts for. */
  readonly owner: string;
  /** Absolute base of the file links handed out (PUBLIC_BASE_URL, or what the client used to reach us). */
  readonly baseUrl: string;
}
