import { modeArgument, startProfiledTarget } from "./profile-target.ts";
const mode = modeArgument();
const target = await startProfiledTarget(mode, []);
await target.load(2);
for (let i = 0; i < Number(process.env.RUNS ?? 3); i++) { const r = await target.load(4); console.log(r.requestsPerSec, r.p99Ms, r.serverCpuUs); }
await target.stop();
