import { spawn } from "node:child_process";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { Agent, request } from "undici";
import { createFederationCa, issueNodeCertificate } from "../certs/federation-pki.ts";

/**
 * Baseline 3: an undici request over a warm mutual-TLS keep-alive connection to a bare HTTPS
 * server, `count` sequential requests after `warm` unmeasured ones; prints p50/p99 in ms.
 * (`mtls-rtt.ts count [in-process|cross-process] [warm]`.) The warm-up matters: V8 goes on
 * optimising the client's and the server's paths for thousands of requests, and here the p50
 * fell from ~0.29 ms after 200 to ~0.18 ms after 3,000 or 12,000.
 * `in-process` (default): client and server in this process, the round trip through both TLS
 * stacks and the loopback with no process to wake. `cross-process`: the server in a child
 * process, as a peer's node is, so each direction also pays the wake-up of the other process.
 */
const [, , countArg, where = "in-process", warmArg, role] = process.argv;
const count = Number(countArg ?? 2000);
const warm = Number(warmArg ?? 200);

interface Tls {
  cert: string;
  key: string;
  ca: string;
}

function listen(tls: Tls): Promise<{ url: string; close: () => void }> {
  const https = createServer({ ...tls, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    req.resume();
    req.on("end", () => res.end('{"ok":true}'));
  });
  return new Promise((resolve) => https.listen(0, "127.0.0.1", () => resolve({ url: `https://127.0.0.1:${(https.address() as AddressInfo).port}/`, close: () => https.close() })));
}

/** The server child of `cross-process`: TLS material from the environment, its URL on stdout. */
async function serveChild(): Promise<void> {
  const server = await listen(JSON.parse(process.env.RTT_TLS!) as Tls);
  process.stdout.write(`listening ${server.url}\n`);
  process.on("SIGTERM", () => process.exit(0));
  process.on("disconnect", () => process.exit(0));
}

function startChild(tls: Tls): Promise<{ url: string; close: () => void }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, import.meta.filename, "0", "cross-process", "0", "serve"], {
      env: { ...process.env, RTT_TLS: JSON.stringify(tls) },
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    });
    child.stdout!.on("data", (d) => {
      const m = /listening (\S+)/.exec(String(d));
      if (m) resolve({ url: m[1]!, close: () => child.kill("SIGTERM") });
    });
    child.on("exit", (code) => reject(new Error(`rtt server exited ${code}`)));
  });
}

async function measure(): Promise<void> {
  const ca = await createFederationCa();
  const [server, client] = [await issueNodeCertificate({ ca, operatorId: "001-01" }), await issueNodeCertificate({ ca, operatorId: "002-01" })];
  const tls = { cert: server.certPem, key: server.keyPem, ca: ca.certPem };
  const target = where === "cross-process" ? await startChild(tls) : await listen(tls);
  const agent = new Agent({ connect: { ca: ca.certPem, cert: client.certPem, key: client.keyPem }, keepAliveTimeout: 60_000 });
  let handshakes = 0;
  agent.on("connect", () => handshakes++);
  const times: number[] = [];
  try {
    for (let i = 0; i < count + warm; i++) {
      const t0 = performance.now();
      const res = await request(target.url, { method: "POST", body: "x", dispatcher: agent });
      await res.body.text();
      if (i >= warm) times.push(performance.now() - t0);
    }
  } finally {
    await agent.close();
    target.close();
  }
  times.sort((a, b) => a - b);
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  process.stdout.write(JSON.stringify({ where, warm, p50Ms: q(0.5), p99Ms: q(0.99), handshakes }) + "\n");
}

if (role === "serve") await serveChild();
else await measure();
