import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * The simulator's working directories (CA and node keys, admin tokens, databases): removed when
 * a run ends, and also when the simulator is stopped from outside (Ctrl-C, SIGTERM), whose exit
 * skips the run's own `finally`.
 */
const live = new Set<string>();

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  live.add(dir);
  return dir;
}

/** Removes the directory, unless `keep` (then it is only forgotten, and stays). */
export function releaseTempDir(dir: string, keep = false): void {
  live.delete(dir);
  if (!keep) rmSync(dir, { recursive: true, force: true });
}

/** On a signal: every directory still held is removed (a kept run gives its own directory). */
export function removeTempDirs(): void {
  for (const dir of live) rmSync(dir, { recursive: true, force: true });
  live.clear();
}
