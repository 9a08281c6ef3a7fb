/** Which checkpoint "undo the last n calls" goes to (chooseSteps), with the newest being "now" or not. */
import { describe, expect, it } from 'vitest';
import { chooseSteps } from '../../src/service/sandbox-checkpoints.js';
import type { CheckpointInfo } from '../../src/backends/checkpoints.js';
import { ServiceError } from '../../src/core/errors.js';

const cp = (id: string, extra: Partial<CheckpointInfo> = {}): CheckpointInfo => ({
  id,
  createdAtMs: 0,
  after: { kind: 'run_code' },
  alive: true,
  current: false,
  memoryBytes: 0,
  fileBytes: 0,
  filesNotKept: [],
  filesTruncated: false,
  threads: 0,
  coversCalls: 1,
  ...extra,
});

const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return (e as ServiceError).code;
  }
  return null;
};

describe('chooseSteps', () => {
  it('counts from before the newest when the newest is the state now', () => {
    const list = [cp('c1'), cp('c2'), cp('c3', { current: true })];
    expect(chooseSteps(list, 1)).toBe('c2');
    expect(chooseSteps(list, 2)).toBe('c1');
    expect(codeOf(() => chooseSteps(list, 3))).toBe('CHECKPOINT_NOT_FOUND');
  });

  it('counts from the newest when the last call left none (a crash)', () => {
    const list = [cp('c1'), cp('c2')];
    expect(chooseSteps(list, 1)).toBe('c2');
    expect(chooseSteps(list, 2)).toBe('c1');
  });

  it('names a checkpoint that is gone instead of skipping it', () => {
    const list = [cp('c1'), cp('c2', { alive: false }), cp('c3', { current: true })];
    expect(codeOf(() => chooseSteps(list, 1))).toBe('CHECKPOINT_LOST');
    expect(chooseSteps(list, 2)).toBe('c1');
  });

  it('says when there is nothing to undo', () => {
    expect(codeOf(() => chooseSteps([], 1))).toBe('CHECKPOINT_NOT_FOUND');
    expect(codeOf(() => chooseSteps([cp('c1', { current: true })], 1))).toBe('CHECKPOINT_NOT_FOUND');
  });
});
