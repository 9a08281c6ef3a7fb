/** Process only: config → backend → service (STATE_DIR read back) → app → listen; on SIGINT/SIGTERM, live sandboxes are paused and the service exits. */
import { loadConfig, isLoopbackHost } from './config.js';
import { createBackend } from './backends/index.js';
import { SandboxService } from './service/sandbox-service.js';
import { buildApp } from './app.js';
import pino from 'pino';

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const logger = pino({
    level: config.LOG_LEVEL,
    redact: ['req.headers.authorization', 'req.headers["x-api-key"]'],
  });
  if (config.apiKeys.length === 0 && !isLoopbackHost(config.HOST) && !config.ALLOW_UNAUTHENTICATED) {
    logger.fatal(
      `refusing to listen on ${config.HOST} without an API key: anyone on the network could run code. Set API_KEY, or HOST=127.0.0.1, or ALLOW_UNAUTHENTICATED=true.`,
    );
    process.exit(2);
  }
  const log = (level: 'info' | 'warn' | 'error', message: string) => logger[level](message);
  if (config.SANDBOX_BACKEND === 'agentcube' && !config.URL_SIGNING_KEY) {
    logger.warn(
      'URL_SIGNING_KEY is not set: file links signed by this instance will not open through other instances, nor survive a restart',
    );
  }
  const backend = createBackend(config, log);
  const status = await backend.init();
  logger.info({ backend: status.name, ready: status.ready, isolation: status.isolation }, 'sandbox backend');
  const service = new SandboxService({ backend, config, log });
  try {
    await service.start();
  } catch (err) {
    logger.fatal(
      `STATE_DIR ${config.STATE_DIR} cannot be used (${(err as Error).message}): set STATE_DIR to a directory the service can create and write, or STATE_DIR=off to turn pausing off`,
    );
    process.exit(2);
  }
  const app = await buildApp({ config, service, logger });

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    const pauseDeadlineMs = config.SHUTDOWN_PAUSE_DEADLINE_S * 1000;
    logger.info(`${signal}: pausing sandboxes (at most ${config.SHUTDOWN_PAUSE_DEADLINE_S} s) and closing`);
    const force = setTimeout(() => process.exit(1), pauseDeadlineMs + 5_000);
    force.unref();
    // Calls in progress end when their sandbox is paused or, at the deadline, stopped: the two go together.
    await Promise.all([app.close(), service.close({ pauseDeadlineMs })]);
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  app.addHook('onClose', async () => undefined);

  await app.listen({ port: config.PORT, host: config.HOST });
  if (config.apiKeys.length === 0)
    logger.warn('no API key set: every client is trusted (bound to loopback only unless ALLOW_UNAUTHENTICATED)');
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
