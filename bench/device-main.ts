import { setPriority, constants } from "node:os";
import { Pool } from "undici";
import { monotonicMs } from "./clock.ts";

/**
 * Goal 3's device, in a process of its own at the lowest scheduling priority (nice 19): it
 * sets a twin's status at A when the bench asks (`{toggle: status}` over IPC) and stamps each request just
 * before it is written. Its own answer is not on the measured path (A sends the peer message
 * first), and at the default priority reading it took the vCPU from B in the middle of the
 * message; at nice 19 it runs when a vCPU has nothing else to do, as a phone's CPU would never
 * compete with the operators'. The stamps go back only when asked ("stamps"), after the
 * toggles, so that no message to the bench wakes it while a toggle is on its way.
 *
 * argv: A's device URL, the status path, the primary's access token.
 */
const [origin, path, token] = process.argv.slice(2) as [string, string, string];
setPriority(constants.priority.PRIORITY_LOW);
const device = new Pool(origin, { connections: 1 });
const stamps: number[] = [];
const failures: string[] = [];

async function toggle(status: string): Promise<void> {
  stamps.push(monotonicMs());
  try {
    const res = await device.request({ method: "PUT", path, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ status }) });
    await res.body.text();
    if (res.statusCode !== 200) failures.push(`toggle answered ${res.statusCode}`);
  } catch (err) {
    failures.push(`toggle failed: ${(err as Error).message}`);
  }
}

process.on("message", (m: unknown) => {
  if (typeof m === "object" && m !== null && "toggle" in m) void toggle(String(m.toggle));
  else if (m === "stamps") process.send!({ stamps: stamps.splice(0), failures: failures.splice(0) });
  else if (m === "close") void device.close().then(() => process.exit(0));
});
process.send!("ready");
