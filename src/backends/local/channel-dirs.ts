/**
 * Channel directories (sandbox-process.ts) made ahead of time: a sandbox start takes one — a rename — instead
 * of waiting for a mkfifo process (several milliseconds on a small VM), and a few are made again, with one
 * mkfifo for all of them, off the start's path.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { makeChannelDirs } from './sandbox-process.js';

/** Directories kept ready. */
const SPARE = 4;

export class ChannelDirs {
  private spare: string[] = [];
  private filling: Promise<void> | null = null;
  private closed = false;

  /** `root`: SANDBOX_ROOT/live, where each sandbox's directory is named after it. */
  constructor(private readonly root: string) {
    mkdirSync(root, { recursive: true, mode: 0o700 });
  }

  /** The channel directory of sandbox `id`, with its FIFOs. */
  async take(id: string): Promise<string> {
    const dir = join(this.root, id);
    const spare = this.spare.shift();
    this.refill();
    if (spare === undefined) {
      await makeChannelDirs([dir]);
      return dir;
    }
    try {
      renameSync(spare, dir);
    } catch (err) {
      rmSync(spare, { recursive: true, force: true });
      throw err;
    }
    return dir;
  }

  /** Makes spare directories until there are SPARE (in the background; a failure only means none are ready). */
  refill(): void {
    if (this.closed || this.filling || this.spare.length >= SPARE) return;
    // Names no sandbox id can have (they start with sbx_): a new service process removes them as strangers.
    const dirs = Array.from({ length: SPARE - this.spare.length }, () => join(this.root, `.spare-${randomBytes(6).toString('hex')}`));
    this.filling = makeChannelDirs(dirs)
      .then(
        () => {
          if (this.closed) for (const d of dirs) rmSync(d, { recursive: true, force: true });
          else this.spare.push(...dirs);
        },
        () => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })),
      )
      .finally(() => {
        this.filling = null;
      });
  }

  close(): void {
    this.closed = true;
    for (const d of this.spare.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}
