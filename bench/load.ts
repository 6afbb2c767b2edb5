import autocannon from "autocannon";

/**
 * The load generator, in its own process (so it never shares an event loop with a server):
 * reads a JSON job from argv, runs autocannon, prints one JSON line of results.
 * Job kinds: a fixed request; or `toggle`, which flips each of `twins` On/Off in turn.
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
  targets?: { path: string; token: string }[];
  toggle?: boolean;
}

const job = JSON.parse(process.argv[2]!) as Job;
let n = 0;
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
              setupRequest: (req: any) => {
                const i = n++;
                const t = job.targets![i % job.targets!.length]!;
                req.path = t.path;
                req.headers = { ...req.headers, authorization: `Bearer ${t.token}`, ...(job.toggle ? { "content-type": "application/json" } : {}) };
                if (job.toggle) {
                  req.method = "PUT";
                  req.body = JSON.stringify({ status: Math.floor(i / job.targets!.length) % 2 === 0 ? "Off" : "On" });
                }
                return req;
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
