// Whether this machine can run Kiln's containers (root and runc). Where it
// can, a task that fails is a test failure, never a skip: a broken OCI
// spec, mount or seccomp profile must not pass as "no containers here".
import { spawnSync } from 'node:child_process';

export const CONTAINERS = process.getuid?.() === 0 && spawnSync('runc', ['--version']).status === 0;

// Skips `t` (and returns true) when containers cannot run here.
export function skipWithoutContainers(t) {
  if (CONTAINERS) return false;
  t.skip('containers need root and runc');
  return true;
}
