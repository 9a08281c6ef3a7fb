/**
 * Host uids for sandboxes. When the service runs as root, each live sandbox runs as a uid of its own
 * that no other process on the host uses, so host permissions separate sandboxes from the host and from
 * each other, and every process of a sandbox can be found by its uid.
 */
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

  release(uid: number): void {
    this.inUse.delete(uid);
  }
}
