import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, createWriteStream, openSync } from "node:fs";
import { join } from "node:path";

export const REPO_ROOT = join(import.meta.dirname, "..");

/** One `federation message` log line of a node: a cross-operator message as its sender saw it. */
export interface MessageEvent {
  readonly time: number;
  readonly from: string;
  readonly to: string;
  readonly method: string;
  readonly path: string;
  readonly msgId: string;
  readonly status: number;
  readonly ms: number;
  readonly error?: string;
}

/**
 * A node as a real process (`node --import tsx node/main.ts` with TWINNING_CONFIG). Its JSON
 * log lines are read from stdout; the federation messages among them feed the report.
 */
export class OperatorProcess {
  child: ChildProcess | undefined;
  readonly messages: MessageEvent[] = [];
  #stderr = "";

  constructor(
    readonly operatorId: string,
    readonly configFile: string,
    readonly logFile?: string,
  ) {}

  /** Starts the process and resolves once it prints that it is running. */
  async start(options: { detached?: boolean; timeoutMs?: number } = {}): Promise<void> {
    // The node reads its configuration from the sandbox's file only: TWINNING_* variables in the
    // user's shell would override it.
    const env = { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("TWINNING_"))), TWINNING_CONFIG: this.configFile };
    if (options.detached) {
      // Sandbox `up`: the node outlives the simulator; its output goes to a file.
      const out = openSync(this.logFile!, "a");
      this.child = spawn(process.execPath, ["--import", "tsx", "node/main.ts"], { cwd: REPO_ROOT, env, stdio: ["ignore", out, out], detached: true });
      closeSync(out);
      this.child.unref();
      return;
    }
    const child = spawn(process.execPath, ["--import", "tsx", "node/main.ts"], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.#stderr = "";
    if (this.logFile) {
      // The node's output is kept in its directory too (for `--keep`).
      const log = createWriteStream(this.logFile, { flags: "a" });
      child.stdout!.pipe(log);
      child.stderr!.pipe(log);
    }
    child.stderr!.on("data", (d) => (this.#stderr = (this.#stderr + String(d)).slice(-4000)));
    let buffer = "";
    let ready: (() => void) | undefined;
    const started = new Promise<void>((resolve) => (ready = resolve));
    child.stdout!.on("data", (chunk) => {
      buffer += String(chunk);
      let cut: number;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line.includes("is running.")) ready?.();
        if (!line.startsWith("{")) continue;
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry.event === "federation.message") {
            this.messages.push({
              time: Number(entry.time),
              from: String(entry.from),
              to: String(entry.to),
              method: String(entry.method),
              path: String(entry.path),
              msgId: String(entry.msgId),
              status: Number(entry.status),
              ms: Number(entry.ms),
              ...(entry.error ? { error: String(entry.error) } : {}),
            });
          }
        } catch {
          /* not a log line */
        }
      }
    });
    const exited = new Promise<never>((_, reject) =>
      child.once("exit", (code) => reject(new Error(`node ${this.operatorId} exited with ${code} before it was ready:\n${this.#stderr}`))),
    );
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`node ${this.operatorId} did not start in time:\n${this.#stderr}`)), options.timeoutMs ?? 30_000).unref(),
    );
    try {
      await Promise.race([started, exited, timeout]);
    } catch (error) {
      // Not ready in time: it must not live on, holding its ports and files.
      if (this.running) await this.kill("SIGKILL");
      throw error;
    }
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends a signal and waits (bounded) for the process to exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL", timeoutMs = 15_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    await gone;
    clearTimeout(timer);
  }
}
