/** The Caller of an HTTP request: the key it authenticated with, and the base its file links are built on. */
import type { FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { Caller } from '../api/caller.js';
import type { SandboxService } from '../service/sandbox-service.js';
import { baseUrl } from '../api/wire.js';

export function callerOf(service: SandboxService, config: Config): (req: FastifyRequest) => Caller {
  return (req) => ({ service, config, owner: req.owner, baseUrl: baseUrl(config, req) });
}
