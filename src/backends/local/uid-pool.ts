/**
 * Host uids for sandboxes. When the service runs as root, each live sandbox runs as a uid of its own
 * that no other process on the host uses, so host permissions separate sandboxes from the host and from
 * each other, and every process of a sandbox can be found by its uid.
 */
import { killAll, pidsOfUid } from './proc.js';

export class UidPool {
  private readonly inUse = new Set<number>();
  private next = 0;

  constructor(
    private readonly base: number,
    private readonly size: number,
  ) {}

  acquire(): number {
    for (let i = 0; i < this.size; i++) {
      const uid = this.base + ((this.next + i) % this.size);
      if (!this.inUse.has(uid)) {
        this.inUse.add(uid);
        this.next = (this.next + i + 1) % this.size;
        return uid;
      }
    }
    throw new Error('no free sandbox uid');
  }

  /** Marks `uid` as taken: a sandbox taken over from an earlier service process runs under it. */
  reserve(uid: number): void {
    this.inUse.add(uid);
  }

  /**
   * A sandbox's outer process is gone; its pid namespace dies with it, asynchronously. Waits for every
   * process of `uid` to end (killing any that linger), then frees the uid. A uid that still has processes
   * after that is never handed out again (`log` says so).
   */
  async reap(uid: number, log: (message: string) => void): Promise<void> {
    for (let attempt = 0; attempt < 200; attempt++) {
      const left = await pidsOfUid(uid);
      if (left.length === 0) {
        this.release(uid);
        return;
      }
      killAll(left);
      await new Promise((r) => setTimeout(r, 10));
    }
    log(`sandbox uid ${uid} still has processes after stop; the uid is retired`);
  }

  release(uid: number): void {
    this.inUse.delete(uid);
  }
}
