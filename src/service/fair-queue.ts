/**
 * Runs at most `concurrency` jobs at once; the rest wait in one FIFO per owner (API key), and a free slot
 * goes to the owners in turn. So a key that queues a hundred sandbox starts delays another key's single start
 * by at most one start, not by a hundred. Each owner may have at most `maxQueuedPerOwner` jobs waiting.
 */
import { ServiceError, ErrorCode } from '../core/errors.js';

interface Job {
  readonly run: () => void;
}

export class FairQueue {
  private running = 0;
  /** Owners with waiting jobs, in the order they are served; a Map keeps insertion order. */
  private readonly waiting = new Map<string, Job[]>();

  constructor(
    private readonly concurrency: number,
    private readonly maxQueuedPerOwner: number,
  ) {}

  /** Runs `fn` when its turn comes; refused with 429 when `owner` already has too many jobs waiting. */
  run<T>(owner: string, fn: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency && this.waiting.size === 0) return this.start(fn);
    const queue = this.waiting.get(owner) ?? [];
    if (queue.length >= this.maxQueuedPerOwner) {
      return Promise.reject(
        new ServiceError(
          ErrorCode.SANDBOX_LIMIT_REACHED,
          `${queue.length} sandbox starts of this API key are already waiting (MAX_QUEUED_CREATES_PER_KEY); retry when they are done`,
          { headers: { 'retry-after': '2' } },
        ),
      );
    }
    return new Promise<T>((resolve, reject) => {
      queue.push({ run: () => void this.start(fn).then(resolve, reject) });
      this.waiting.set(owner, queue);
    });
  }

  private start<T>(fn: () => Promise<T>): Promise<T> {
    this.running++;
    const done = () => {
      this.running--;
      this.next();
    };
    const promise = Promise.resolve().then(fn);
    promise.then(done, done);
    return promise;
  }

  private next(): void {
    if (this.running >= this.concurrency) return;
    const first = this.waiting.entries().next();
    if (first.done) return;
    const [owner, queue] = first.value;
    const job = queue.shift()!;
    // The owner goes to the back of the line: the next free slot is someone else's if anyone else waits.
    this.waiting.delete(owner);
    if (queue.length > 0) this.waiting.set(owner, queue);
    job.run();
  }
}
