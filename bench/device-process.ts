import { fork, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

/** The bench's handle on goal 3's device process (`device-main.ts`). */
export class DeviceProcess {
  private constructor(private readonly child: ChildProcess) {}

  static start(origin: string, statusPath: string, token: string): Promise<DeviceProcess> {
    const child = fork(join(ROOT, "bench/device-main.ts"), [origin, statusPath, token], { cwd: ROOT, execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    return new Promise((resolve, reject) => {
      child.once("message", () => resolve(new DeviceProcess(child)));
      child.once("exit", (code) => reject(new Error(`the device process ended (${code}) before it was ready`)));
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Asks for one toggle to `status`; the device stamps it just before writing it. */
  toggle(status: "On" | "Off"): void {
    this.child.send({ toggle: status });
  }

  /** The stamps (monotonic ms) of the toggles since the last call, in order; throws if one failed. */
  stamps(): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.child.once("message", (m) => {
        const { stamps, failures } = m as { stamps: number[]; failures: string[] };
        if (failures.length > 0) reject(new Error(failures[0]));
        else resolve(stamps);
      });
      this.child.send("stamps");
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null) return resolve();
      this.child.once("exit", () => resolve());
      this.child.send("close");
    });
  }
}
