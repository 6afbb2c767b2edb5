import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { Agent, request } from "undici";
import { createFederationCa, issueNodeCertificate } from "../certs/federation-pki.ts";

/**
 * Baseline 3: an undici request over a warm mutual-TLS keep-alive connection to a bare HTTPS
 * server (in this process: the round trip through both TLS stacks and the loopback). Prints
 * p50/p99 in ms over `count` sequential requests after a warm-up.
 */
const count = Number(process.argv[2] ?? 2000);
const ca = await createFederationCa();
const [server, client] = [await issueNodeCertificate({ ca, operatorId: "001-01" }), await issueNodeCertificate({ ca, operatorId: "002-01" })];
const https = createServer({ cert: server.certPem, key: server.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
  req.resume();
  req.on("end", () => res.end('{"ok":true}'));
});
await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/`;
const agent = new Agent({ connect: { ca: ca.certPem, cert: client.certPem, key: client.keyPem }, keepAliveTimeout: 60_000 });
let handshakes = 0;
agent.on("connect", () => handshakes++);
const times: number[] = [];
for (let i = 0; i < count + 200; i++) {
  const t0 = performance.now();
  const res = await request(url, { method: "POST", body: "x", dispatcher: agent });
  await res.body.text();
  if (i >= 200) times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
process.stdout.write(JSON.stringify({ p50Ms: q(0.5), p99Ms: q(0.99), handshakes }) + "\n");
await agent.close();
https.close();
