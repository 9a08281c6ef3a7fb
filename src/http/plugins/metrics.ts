/**
 * GET /metrics in Prometheus's text format (prom-client): calls by operation and outcome, their latency, bytes
 * in and out, interpreter restarts, and live / paused / pooled sandboxes, plus Node's own process metrics.
 * Routes that run code name the outcome of the user's code (ok, error, timeout, each limit) in req.outcome;
 * for the others it comes from the status (ok, rejected, failed). Labels take a bounded set of values: the
 * operation is the route's operationId, or its URL pattern.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SandboxService } from '../../service/sandbox-service.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** What came of the user's code (set by routes that run it), for the calls counter. */
    outcome: string;
    /** The interpreter had been restarted (its state lost) by the time the call answered. */
    restarted: boolean;
  }
}

export const metricsPlugin = fp(
  async (app: FastifyInstance, opts: { service: SandboxService }) => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix: 'ciw_' });
    const registers = [registry];
    const calls = new Counter({
      name: 'ciw_calls_total',
      help: 'Calls by operation and outcome: ok, error, timeout, memory_limit, process_limit, cpu_limit, output_limit, disk_limit, kernel_died (code); rejected (4xx), failed (5xx)',
      labelNames: ['operation', 'outcome'],
      registers,
    });
    const duration = new Histogram({
      name: 'ciw_call_duration_seconds',
      help: 'Time from request to answer, by operation',
      labelNames: ['operation'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    const bytesIn = new Counter({ name: 'ciw_request_bytes_total', help: 'Request body bytes received', registers });
    const bytesOut = new Counter({
      name: 'ciw_response_bytes_total',
      help: 'Response body bytes sent (answers of known length)',
      registers,
    });
    const restarts = new Counter({
      name: 'ciw_kernel_restarts_total',
      help: 'Calls that found or left their interpreter restarted (its variables lost)',
      registers,
    });
    const service = opts.service;
    new Gauge({
      name: 'ciw_sandboxes',
      help: 'Sandboxes by state: live (running), paused (stored in STATE_DIR), pooled (started ahead, not handed out)',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = service.counts();
        this.set({ state: 'live' }, counts.live);
        this.set({ state: 'paused' }, counts.paused);
        this.set({ state: 'pooled' }, counts.pooled);
      },
    });

    const counters = new Map<string, ReturnType<typeof calls.labels>>();
    const timers = new Map<string, ReturnType<typeof duration.labels>>();
    app.decorateRequest('outcome', '');
    app.decorateRequest('restarted', false);
    app.addHook('onResponse', (req: FastifyRequest, reply: FastifyReply, done: () => void) => {
      const operation = req.routeOptions.schema?.operationId ?? req.routeOptions.url ?? 'unmatched';
      const status = reply.statusCode;
      const outcome = req.outcome || (status < 400 ? 'ok' : status < 500 ? 'rejected' : 'failed');
      // The labelled children, kept: prom-client would hash the labels on every call of the hot path.
      const key = `${operation}\n${outcome}`;
      let counter = counters.get(key);
      if (!counter) counters.set(key, (counter = calls.labels(operation, outcome)));
      let timer = timers.get(operation);
      if (!timer) timers.set(operation, (timer = duration.labels(operation)));
      counter.inc();
      timer.observe(reply.elapsedTime / 1000);
      bytesIn.inc(Number(req.headers['content-length']) || 0);
      bytesOut.inc(Number(reply.getHeader('content-length')) || 0);
      if (req.restarted) restarts.inc();
      done();
    });
    app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  },
  { name: 'ciw-metrics' },
);
