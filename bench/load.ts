import autocannon from "autocannon";

/**
 * The load generator, in its own process (so it never shares an event loop with a server):
 * reads a JSON job from argv, runs autocannon, prints one JSON line of results.
 * Job kinds: a fixed request; or `toggle`, which sets each target twin to the status it does not
 * have, one request at a time per twin, so that every toggle is a change the node commits (two
 * toggles of one twin in flight at once could meet it in either order, and the second be a no-op).
 */
interface Job {
  url: string;
  connections: number;
  durationS?: number;
  /** A fixed number of requests instead of a duration. */
  amount?: number;
  method?: string;
  body?: string;
  headers?: Record<string, string>;
  /** Per request, one of these (path + token), round robin. */
  targets?: { path: string; token: string; status?: "On" | "Off" }[];
  toggle?: boolean;
}

const job = JSON.parse(process.argv[2]!) as Job;
let n = 0;
const targets = job.targets ?? [];
if (job.toggle && (targets.length < job.connections || targets.some((t) => t.status !== "On" && t.status !== "Off"))) {
  throw new Error("a toggle job needs at least one target per connection, each with its twin's current status");
}
/** Toggles: each twin's last status asked for, and the twins with a toggle in flight. */
const statusOf = targets.map((t) => t.status);
const inFlight = new Set<number>();
/**
 * The next twin with no toggle in flight, round robin. One is free while every request gets its
 * answer (each connection has at most one out); a request lost to a timeout or a broken
 * connection never frees its twin, and the run stops here rather than spin.
 */
const nextFreeTarget = (): number => {
  for (let tries = 0; tries < targets.length; tries++) {
    const i = n++ % targets.length;
    if (!inFlight.has(i)) return i;
  }
  throw new Error("every twin has a toggle in flight: a request got no answer (timeout or broken connection)");
};
const instance = autocannon(
  {
    url: job.url,
    connections: job.connections,
    ...(job.amount ? { amount: job.amount } : { duration: job.durationS ?? 5 }),
    method: (job.method ?? "GET") as "GET",
    ...(job.body ? { body: job.body } : {}),
    headers: { ...(job.headers ?? {}) },
    // Reads are fixed requests (autocannon builds each once and cycles through them per
    // connection); toggles need a per-request body, so they are set up request by request.
    ...(job.targets && !job.toggle
      ? { requests: job.targets.map((t) => ({ method: "GET" as const, path: t.path, headers: { authorization: `Bearer ${t.token}` } })) }
      : job.targets
      ? {
          requests: [
            {
              setupRequest: (req: any, context: { target?: number }) => {
                const i = job.toggle ? nextFreeTarget() : n++ % targets.length;
                const t = targets[i]!;
                req.path = t.path;
                req.headers = { ...req.headers, authorization: `Bearer ${t.token}`, ...(job.toggle ? { "content-type": "application/json" } : {}) };
                if (job.toggle) {
                  inFlight.add(i);
                  context.target = i;
                  const status = statusOf[i] === "On" ? "Off" : "On";
                  statusOf[i] = status;
                  req.method = "PUT";
                  req.body = JSON.stringify({ status });
                }
                return req;
              },
              // The context lives from a request's setup to its answer (autocannon resets it after).
              onResponse: (_status: number, _body: string, context: { target?: number }) => {
                if (context.target !== undefined) inFlight.delete(context.target);
              },
            },
          ],
        }
      : {}),
  },
  (error: unknown, result: any) => {
    if (error) {
      process.stderr.write(String(error));
      process.exit(1);
    }
    process.stdout.write(
      JSON.stringify({
        requestsPerSec: result.requests.average,
        p50Ms: result.latency.p50,
        p99Ms: result.latency.p99,
        total: result.requests.total,
        non2xx: result.non2xx,
        errors: result.errors,
        timeouts: result.timeouts,
      }) + "\n",
    );
  },
);
void instance;
