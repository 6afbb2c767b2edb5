import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { parseNodeConfig } from "../../node/config/node-config.ts";
import { rawHttp } from "../helpers/raw-http.ts";
import { startNode } from "../../node/server/start-node.ts";
import { createPki } from "../helpers/federation-fixture.ts";
import { Api, enc, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

const logLines: string[] = [];
const logSink = new Writable({
  write(chunk, _enc, done) {
    logLines.push(...String(chunk).split("\n").filter(Boolean));
    done();
  },
});

let t: TestNode;
let api: Api;
beforeAll(async () => {
  t = await startTestNode({ logLevel: "info" }, { logDestination: logSink });
  api = new Api(t.url);
});
afterAll(async () => t.cleanup());

describe("the API around the node", () => {
  it("HLF-CM-001 HLF-CM-003 the API is HTTP/REST with its version in the resource URLs", async () => {
    const doc = (await (await fetch(`${t.url}/twinning/v1/openapi.json`)).json()) as any;
    const paths = Object.keys(doc.paths);
    expect(paths.length).toBeGreaterThan(10);
    for (const p of paths) expect(p.startsWith("/twinning/v1/") || p.startsWith("/admin/v1/")).toBe(true);
  });

  it("HLF-CM-002 HLF-CM-004 resource names follow the functions at the user level: primary twins, secondary twinning, activation codes", async () => {
    const doc = (await (await fetch(`${t.url}/twinning/v1/openapi.json`)).json()) as any;
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/twinning/v1/secondary/{addr}/activationCodes",
        "/twinning/v1/secondary/{addr}/twinning",
        "/twinning/v1/secondary/{addr}/twinning/status",
        "/twinning/v1/primary/{addr}/twins",
        "/twinning/v1/primary/{addr}/twins/{ref}",
        "/twinning/v1/primary/{addr}/twins/{ref}/status",
        "/twinning/v1/primary/{addr}/subscriptions",
        "/twinning/v1/secondary/{addr}/subscriptions",
        "/twinning/v1/primary/{addr}/notifications",
        "/twinning/v1/secondary/{addr}/notifications",
      ]),
    );
    expect(doc.paths["/twinning/v1/primary/{addr}/twins/{ref}/status"].put.requestBody.content["application/json"].schema).toBeDefined();
    const page = await (await fetch(`${t.url}/twinning/v1/docs`)).text();
    expect(page).toContain("/twinning/v1/primary/{addr}/twins");
    expect(page).not.toContain("<script");
  });

  it("HLF-CM-003 every resource URL the API hands out carries the API version", async () => {
    const [pa, sa] = [newAddress(), newAddress()];
    const p = { address: pa, token: await api.subscriber(t.node.adminToken, pa) };
    const s = { address: sa, token: await api.subscriber(t.node.adminToken, sa) };
    const { twin, codeResource } = await api.twin(p, s);
    const list = await api.call("GET", `/twinning/v1/primary/${enc(pa)}/twins`, { token: p.token });
    for (const url of [twin.resourceURL, codeResource.resourceURL, list.body.twinList.resourceURL]) expect(new URL(url).pathname).toMatch(/^\/twinning\/v1\//);
  });

  it("HLF-CM-004 resources speak of the user's twins, codes and statuses, not of underlying protocols", async () => {
    const [pa, sa] = [newAddress(), newAddress()];
    const p = { address: pa, token: await api.subscriber(t.node.adminToken, pa) };
    const s = { address: sa, token: await api.subscriber(t.node.adminToken, sa) };
    const { twin } = await api.twin(p, s, "my-watch");
    const one = await api.call("GET", `/twinning/v1/primary/${enc(pa)}/twins/my-watch`, { token: p.token });
    expect(Object.keys(one.body.twin).sort()).toEqual(["name", "primaryAddress", "resourceURL", "secondaryAddress", "secondaryOperatorId", "status", "twinId"]);
    expect(one.body.twin).toMatchObject({ twinId: twin.twinId, name: "my-watch", status: "On", primaryAddress: pa, secondaryAddress: sa });
  });

  it("health, readiness and Prometheus metrics", async () => {
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${t.url}/readyz`)).json()).toEqual({ status: "ready" });
    await fetch(`${t.url}/twinning/v1/primary/x/twins`);
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    expect(metrics).toMatch(/twinning_http_requests_total\{method="GET",route="\/twinning\/v1\/primary\/:addr\/twins",status="401"\} \d/);
    expect(metrics).toContain("twinning_outbox_depth 0");
    expect(metrics).toContain("twinning_http_request_duration_seconds_bucket");
    // A long poll (up to 30 s) and a call waiting on a peer (5 s) have buckets of their own.
    expect(metrics).toMatch(/twinning_http_request_duration_seconds_bucket\{le="30",/);
    // Delivery results are there before any delivery, for rate() and absent() alerts.
    for (const kind of ["peer", "callback"]) for (const result of ["delivered", "retry", "dead"]) expect(metrics).toMatch(new RegExp(`twinning_outbox_deliveries_total\\{kind="${kind}",result="${result}"\\} \\d`));
  });

  it("the build-info metric names the node's version (package.json) and Node's, and the start log line the version", async () => {
    const { version } = JSON.parse(readFileSync(join(import.meta.dirname, "..", "..", "package.json"), "utf8")) as { version: string };
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    expect(metrics).toContain(`twinning_build_info{version="${version}",nodejs="${process.version}"} 1`);
    expect(logLines.map((l) => JSON.parse(l)).find((l) => l.msg === "node started")).toMatchObject({ version });
  });

  it("a request refused before routing is logged at info with its listener, status, reason and client address, and no path", async () => {
    const refusals = () => logLines.map((l) => JSON.parse(l)).filter((l) => l.msg === "request refused before routing");
    const before = refusals().length;
    expect(await rawHttp(t.url, (w) => w(`GET /twinning/v1/primary/tel%3A%2B1555/twins HTTP/1.1\r\n\r\n`))).toMatch(/^HTTP\/1\.1 400 /);
    expect(await rawHttp(t.url, (w) => w(`GARBAGE\r\n\r\n`))).toMatch(/^HTTP\/1\.1 400 /);
    const [noHost, unparsable] = refusals().slice(before);
    expect(noHost).toMatchObject({ level: 30, listener: "device", status: 400, reason: "no Host header", remote: "127.0.0.1" });
    expect(unparsable).toMatchObject({ level: 30, listener: "device", status: 400, reason: expect.stringMatching(/^HPE_/), remote: "127.0.0.1" });
    // What the client sent is not in the line: a path holds addresses.
    expect(JSON.stringify(noHost)).not.toContain("1555");
  });

  it("GET /admin/v1/twins pages through the active twins: next, when a page is full, is the after of the next page; a malformed cursor is SVC0002", async () => {
    const fresh = await startTestNode();
    try {
      const freshApi = new Api(fresh.url);
      const made: string[] = [];
      for (let i = 0; i < 3; i++) {
        const [pa, sa] = [newAddress(), newAddress()];
        const { twin } = await freshApi.twin({ address: pa, token: await freshApi.subscriber(fresh.node.adminToken, pa) }, { address: sa, token: await freshApi.subscriber(fresh.node.adminToken, sa) });
        made.push(twin.twinId);
      }
      const list = (query: string) => freshApi.call("GET", `/admin/v1/twins${query}`, { token: fresh.node.adminToken });
      const ids = (res: { body: { twins: { twinId: string }[] } }) => res.body.twins.map((x) => x.twinId);
      const first = await list("?limit=2");
      expect(ids(first)).toHaveLength(2);
      expect(first.body.next).toBe(ids(first)[1]);
      const second = await list(`?limit=2&after=${first.body.next}`);
      expect(second.body.next).toBeUndefined();
      // Every twin once, across the pages (twins made in one millisecond are in id order).
      expect([...ids(first), ...ids(second)].sort()).toEqual([...made].sort());
      const bad = await list("?after=not-a-twin-id");
      expect([bad.status, bad.body.requestError.serviceException.messageId]).toEqual([400, "SVC0002"]);
      // A cursor that names no twin is refused, not taken for the end of the list.
      const unknown = await list("?after=00000000-0000-4000-8000-000000000000");
      expect([unknown.status, unknown.body.requestError.serviceException.variables]).toEqual([400, ["after"]]);
    } finally {
      await fresh.cleanup();
    }
  });

  it("/readyz answers 503 storage unavailable when the store cannot serve (here: its database closed under it), while /healthz still answers", async () => {
    const broken = await startTestNode();
    try {
      expect((await fetch(`${broken.url}/readyz`)).status).toBe(200);
      await broken.node.context.store.close();
      const ready = await fetch(`${broken.url}/readyz`);
      expect([ready.status, await ready.json()]).toEqual([503, { status: "storage unavailable" }]);
      expect((await fetch(`${broken.url}/healthz`)).status).toBe(200);
    } finally {
      await broken.cleanup();
    }
    // A disk with less free space than limits.minFreeDiskBytes (here 1 TiB) is not ready either.
    const cramped = await startTestNode({ limits: { minFreeDiskBytes: 1_099_511_627_776 } });
    try {
      const ready = await fetch(`${cramped.url}/readyz`);
      expect([ready.status, await ready.json()]).toEqual([503, { status: "storage unavailable" }]);
    } finally {
      await cramped.cleanup();
    }
  });

  it("on stop, /readyz answers 503 at once while requests are still served for shutdownDrainMs; then the listener closes", async () => {
    const drained = await startTestNode({ limits: { shutdownDrainMs: 600 } });
    try {
      const address = newAddress();
      const token = await new Api(drained.url).subscriber(drained.node.adminToken, address);
      const list = () => fetch(`${drained.url}/twinning/v1/primary/${enc(address)}/twins`, { headers: { authorization: `Bearer ${token}` } });
      expect(await (await fetch(`${drained.url}/readyz`)).json()).toEqual({ status: "ready" });
      const startedAt = performance.now();
      const stopped = drained.node.stop();
      const ready = await fetch(`${drained.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toEqual({ status: "shutting down" });
      // Still serving: the load balancer has not taken the node out yet.
      const during = await list();
      expect(during.status).toBe(200);
      expect(((await during.json()) as { twinList: { twin: unknown[] } }).twinList.twin).toEqual([]);
      await stopped;
      expect(performance.now() - startedAt).toBeGreaterThanOrEqual(590);
      await expect(list()).rejects.toThrow();
    } finally {
      await drained.cleanup();
    }
  });

  it("with metricsToken set, /metrics answers only that bearer token (401 with the OMA body otherwise)", async () => {
    const metricsToken = "metrics-scraper-0123456789abcdef";
    const guarded = await startTestNode({ metricsToken });
    try {
      const none = await fetch(`${guarded.url}/metrics`);
      expect(none.status).toBe(401);
      const body = (await none.json()) as { requestError: { serviceException?: { messageId: string }; policyException?: { messageId: string } } };
      expect(body.requestError.serviceException?.messageId ?? body.requestError.policyException?.messageId).toMatch(/^(SVC|POL)\d{4}$/);
      expect(JSON.stringify(body)).not.toContain(metricsToken);
      const wrong = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${guarded.node.adminToken}` } });
      expect(wrong.status).toBe(401);
      const right = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } });
      expect(right.status).toBe(200);
      expect(await right.text()).toContain("twinning_outbox_depth");
      // The node's other open routes stay open.
      expect((await fetch(`${guarded.url}/healthz`)).status).toBe(200);
    } finally {
      await guarded.cleanup();
    }
  });

  it("JSON logs carry a request id and never a token, code or credential", async () => {
    const [pa, sa] = [newAddress(), newAddress()];
    const p = { address: pa, token: await api.subscriber(t.node.adminToken, pa) };
    const s = { address: sa, token: await api.subscriber(t.node.adminToken, sa) };
    const { codeResource, primaryTwinToken } = await api.twin(p, s);
    const res = await api.call("GET", `/twinning/v1/primary/${enc(pa)}/twins`, { token: p.token, headers: { "x-request-id": "trace-42" } });
    expect(res.headers.get("x-request-id")).toBe("trace-42");
    const entries = logLines.map((l) => JSON.parse(l));
    expect(entries.some((e) => e.requestId === "trace-42" && e.status === 200)).toBe(true);
    // Refusals carry it too: not found, no token, another subscriber's address.
    for (const [path, token, status] of [["/twinning/v1/nowhere", p.token, 404], [`/twinning/v1/primary/${enc(pa)}/twins`, undefined, 401], [`/twinning/v1/primary/${enc(sa)}/twins`, p.token, 403]] as const) {
      const refused = await api.call("GET", path, { ...(token ? { token } : {}), headers: { "x-request-id": "trace-43" } });
      expect([refused.status, refused.headers.get("x-request-id")]).toEqual([status, "trace-43"]);
    }
    const all = logLines.join("\n");
    for (const secret of [p.token, s.token, primaryTwinToken, t.node.adminToken, `secret-${pa.slice(-6)}`, `"${codeResource.code}"`]) expect(all).not.toContain(secret);
  });

  it("HLF-CM-006 provisioning many subscribers at once (their credentials hashed two at a time) provisions each, and each gets its token", async () => {
    const addresses = Array.from({ length: 8 }, () => newAddress());
    const tokens = await Promise.all(addresses.map((a) => api.subscriber(t.node.adminToken, a)));
    expect(tokens.every((x) => typeof x === "string" && x.length > 20)).toBe(true);
    for (const a of addresses) expect((await api.call("GET", `/admin/v1/subscribers/${enc(a)}`, { token: t.node.adminToken })).body).toEqual({ subscriber: { address: a, twinning: true } });
  });

  it("the admin API's provisioning leaves an audit line naming the subscriber and what ended, never the credential", async () => {
    const address = newAddress();
    await api.subscriber(t.node.adminToken, address);
    // Admin answers, refusals included, are never cached.
    const read = await api.call("GET", `/admin/v1/subscribers/${enc(address)}`, { token: t.node.adminToken });
    const refused = await api.call("GET", `/admin/v1/subscribers/${enc(address)}`, { token: "not-the-admin-token-0123456789" });
    expect([read.status, read.headers.get("cache-control"), refused.status, refused.headers.get("cache-control")]).toEqual([200, "no-store", 401, "no-store"]);
    const gone = await api.call("DELETE", `/admin/v1/subscribers/${enc(address)}`, { token: t.node.adminToken });
    expect(gone.status).toBe(204);
    const entries = logLines.map((l) => JSON.parse(l)).filter((e) => e.address === address);
    expect(entries.map((e) => [e.msg, e.level])).toEqual([["subscriber provisioned", 30], ["subscriber de-provisioned", 30]]);
    expect(entries[0]).toMatchObject({ created: true, twinning: true, twinsEnded: 0 });
    expect(JSON.stringify(entries)).not.toContain(`secret-${address.slice(-6)}`);
  });
});

describe("graceful shutdown", () => {
  it("on SIGTERM in-flight requests finish, the process exits 0 and the outbox keeps its entries", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "twinning-sigterm-"));
    const child = spawn(process.execPath, ["--import", "tsx", "node/main.ts"], {
      cwd: join(import.meta.dirname, "../.."),
      env: { ...process.env, TWINNING_DATA_DIR: dataDir, TWINNING_DEVICE_PORT: "0", TWINNING_LOG_LEVEL: "silent", TWINNING_LIMITS_ALLOW_PRIVATE_CALLBACK_TARGETS: "true" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`node did not start: ${out}`)), 15_000);
        child.stdout.on("data", (d) => {
          out += String(d);
          const m = /Device API:\s+(http:\/\/\S+)\/twinning\/v1/.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
      });
      const admin = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
      const api2 = new Api(url);
      const [pa, sa] = [newAddress(), newAddress()];
      const p = { address: pa, token: await api2.subscriber(admin, pa) };
      const s = { address: sa, token: await api2.subscriber(admin, sa) };
      const { twin } = await api2.twin(p, s);
      // A callback nobody answers: the notification waits in the outbox.
      await api2.call("POST", `/twinning/v1/secondary/${enc(sa)}/subscriptions`, { token: s.token, body: { callbackReference: { notifyURL: "http://127.0.0.1:9/unreachable" } } });
      await api2.call("PUT", `/twinning/v1/primary/${enc(pa)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
      // A long poll in flight when SIGTERM arrives.
      const x = newAddress();
      const xs = { address: x, token: await api2.subscriber(admin, x) };
      const xc = await api2.call("POST", `/twinning/v1/secondary/${enc(x)}/activationCodes`, { token: xs.token });
      const inFlight = api2.call("GET", `${new URL(xc.body.activationCode.resourceURL).pathname}?wait=20`, { token: xs.token });
      await new Promise((r) => setTimeout(r, 200));
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      child.kill("SIGTERM");
      const answered = await inFlight;
      expect(answered.status).toBe(200);
      expect(answered.body.activationCode.status).toBe("Pending");
      expect(await exited).toBe(0);
      const db = new Database(join(dataDir, "node-001-01.sqlite"), { readonly: true });
      const row = db.prepare(`SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'`).get() as { n: number };
      db.close();
      expect(row.n).toBe(1);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("the admin token on the console", () => {
  /** Starts `node/main.ts`, returns what it printed up to "is running", then stops it. */
  async function consoleOfStart(env: Record<string, string>): Promise<string> {
    const child = spawn(process.execPath, ["--import", "tsx", "node/main.ts"], {
      cwd: join(import.meta.dirname, "../.."),
      env: { ...process.env, TWINNING_DEVICE_PORT: "0", TWINNING_LOG_LEVEL: "silent", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`node did not start: ${out}`)), 15_000);
        child.stdout.on("data", (d) => {
          out += String(d);
          if (/Process id:/.test(out)) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
      return out;
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  }

  it("HLF-CM-006 is never printed, only where it is: generated now, kept from an earlier start, or configured", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "twinning-console-"));
    try {
      const first = await consoleOfStart({ TWINNING_DATA_DIR: dataDir });
      const generated = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
      expect(generated.length).toBeGreaterThanOrEqual(24);
      expect(first).not.toContain(generated);
      expect(first).toContain(`Admin token: generated now in ${join(dataDir, "admin-token")}`);
      const again = await consoleOfStart({ TWINNING_DATA_DIR: dataDir });
      expect(again).not.toContain(generated);
      expect(again).toContain(`Admin token: in ${join(dataDir, "admin-token")}`);
      const configured = "operator-configured-admin-token-0123456789";
      const withConfigured = await consoleOfStart({ TWINNING_DATA_DIR: dataDir, TWINNING_ADMIN_TOKEN: configured });
      expect(withConfigured).not.toContain(configured);
      expect(withConfigured).toContain("Admin token: as configured");
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("federation options", () => {
  it("the signed messages' lifetime and clock skew cannot exceed DESIGN's 60 s and 30 s (peers that follow it would refuse every message)", () => {
    const federation = { caFile: "ca.pem", certFile: "node.pem", keyFile: "node.key", signingKeyFiles: ["signing.jwk.json"] };
    const parsed = (over: object) => () => parseNodeConfig({ federation: { ...federation, ...over } });
    expect(parsed({ maxMessageLifetimeSeconds: 60, maxClockSkewSeconds: 30 })().federation).toMatchObject({ maxMessageLifetimeSeconds: 60, maxClockSkewSeconds: 30 });
    expect(parsed({ maxMessageLifetimeSeconds: 61 })).toThrow(/federation\.maxMessageLifetimeSeconds/);
    expect(parsed({ maxClockSkewSeconds: 31 })).toThrow(/federation\.maxClockSkewSeconds/);
  });
});

describe("a start that fails part way", () => {
  it("leaves nothing behind: no listener, and the database lock is free for the next start in the same process", async () => {
    const root = mkdtempSync(join(tmpdir(), "twinning-startfail-"));
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    try {
      const pki = await createPki(root, ["001-01"]);
      const o = pki.operators[0]!;
      const config = (federationPort: number) =>
        parseNodeConfig({
          logLevel: "silent",
          dataDir: join(root, "data"),
          device: { host: "127.0.0.1", port: 0 },
          federation: { host: "127.0.0.1", port: federationPort, caFile: pki.caFile, certFile: o.certFile, keyFile: o.keyFile, signingKeyFiles: [o.signingKeyFile], peersFile: o.peersFile },
        });
      const listeners = () => process.getActiveResourcesInfo().filter((r) => r === "TCPServerWrap").length;
      const before = listeners();
      // The device listener is up and the database open when the federation port turns out taken.
      await expect(startNode(config((taken.address() as AddressInfo).port))).rejects.toThrow(/EADDRINUSE/);
      // A closed listener leaves the list of active handles on a later turn of the event loop.
      for (let i = 0; i < 40 && listeners() !== before; i++) await new Promise((r) => setTimeout(r, 25));
      expect(listeners()).toBe(before);
      const node = await startNode(config(0));
      try {
        expect((await fetch(`${node.deviceUrl}/healthz`)).status).toBe(200);
      } finally {
        await node.stop();
      }
    } finally {
      taken.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
