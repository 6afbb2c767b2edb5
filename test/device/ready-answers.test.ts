import type { IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReadyAnswers } from "../../node/http/ready-answers.ts";
import { ManualClock } from "../helpers/manual-clock.ts";
import { rawHttp } from "../helpers/raw-http.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

// Ready answers (node/http/ready-answers.ts): repeated reads sent from kept bytes. Every test
// here checks through /metrics that the kept answer was really used, so that the freshness
// checks after it cannot pass by the cache never being hit.

const clock = new ManualClock();
let t: TestNode;
let off: TestNode;
let api: Api;

beforeAll(async () => {
  t = await startTestNode({}, { nowMs: clock.now });
  off = await startTestNode({ limits: { readyAnswerBytes: 0 } });
  api = new Api(t.url);
});
afterAll(async () => Promise.all([t.cleanup(), off.cleanup()]));

async function party(on = t) {
  const address = newAddress();
  return { address, token: await new Api(on.url).subscriber(on.node.adminToken, address) };
}

/** Ready answers sent so far, by route template, from the node's Prometheus metrics. */
async function readySent(on: TestNode, route: string): Promise<number> {
  const text = await (await fetch(`${on.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`twinning_http_ready_answers_total{route="${route}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

/**
 * Reads `path` twice with `token` and checks that the second answer was sent ready; returns it
 * and the count of ready answers after it.
 */
async function readyRead(path: string, token: string, route: string) {
  await api.call("GET", path, { token });
  const before = await readySent(t, route);
  const answer = await api.call("GET", path, { token });
  expect(await readySent(t, route)).toBe(before + 1);
  return { answer, sent: before + 1 };
}

const LIST = "/twinning/v1/primary/:addr/twins";
const ONE = "/twinning/v1/primary/:addr/twins/:ref";
const TWINNING = "/twinning/v1/secondary/:addr/twinning";

describe("ready answers", () => {
  it("HLF-PD-003 a repeated twin list is sent ready, and a toggle in between is in the very next answer", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s, "watch");
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    const first = await api.call("GET", path, { token: p.token });
    const { answer: second, sent } = await readyRead(path, p.token, LIST);
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(second.headers.get("content-type")).toBe(first.headers.get("content-type"));

    const toggled = await api.call("PUT", `${path}/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    expect(toggled.status).toBe(200);
    const after = await api.call("GET", path, { token: p.token });
    expect(after.body.twinList.twin[0].status).toBe("Off");
    const again = await api.call("GET", path, { token: p.token });
    expect(again.body.twinList.twin[0].status).toBe("Off");
    expect(await readySent(t, LIST)).toBe(sent + 1);
  });

  it("HLF-SD-006 a repeated twinning query is sent ready, and a rename or toggle by the primary shows at once", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s, "car");
    const path = `/twinning/v1/secondary/${enc(s.address)}/twinning`;
    const { answer: ready } = await readyRead(path, s.token, TWINNING);
    expect(ready.body.twinning).toMatchObject({ status: "On", name: "car", primaryAddress: p.address });
    await api.call("PATCH", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: p.token, body: { name: "van" } });
    expect((await api.call("GET", path, { token: s.token })).body.twinning.name).toBe("van");
    await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    expect((await api.call("GET", path, { token: s.token })).body.twinning.status).toBe("Off");
  });

  it("HLF-TE-004 a twin token's ready answer dies with its twin: the next read is refused (SVC2003)", async () => {
    const [p, s] = [await party(), await party()];
    const { twin, primaryTwinToken } = await api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`;
    expect((await readyRead(path, primaryTwinToken, ONE)).answer.status).toBe(200);
    expect((await api.call("DELETE", path, { token: p.token })).status).toBe(204);
    const refused = await api.call("GET", path, { token: primaryTwinToken });
    expect(refused.status).toBe(401);
    expect(messageId(refused.body)).toBe("SVC2003");
  });

  it("HLF-CM-006 de-provisioning refuses the subscriber's next read at once (POL2001), ready answer or not", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    expect((await readyRead(path, p.token, LIST)).answer.status).toBe(200);
    const put = await api.call("PUT", `/admin/v1/subscribers/${enc(p.address)}`, { token: t.node.adminToken, body: { subscriber: { twinning: false, credential: "whatever-1" } } });
    expect(put.status).toBe(200);
    const refused = await api.call("GET", path, { token: p.token });
    expect(refused.status).toBe(403);
    expect(messageId(refused.body)).toBe("POL2001");
  });

  it("HLF-CM-006 a ready answer goes only to the token that asked: another subscriber's token on the same path is refused (POL2003)", async () => {
    const [p, s, other] = [await party(), await party(), await party()];
    await api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    const { sent } = await readyRead(path, p.token, LIST);
    const refused = await api.call("GET", path, { token: other.token });
    expect(refused.status).toBe(403);
    expect(messageId(refused.body)).toBe("POL2003");
    // The same token spelled with another scheme case is another key: answered by the app, the same way.
    const other2 = await api.call("GET", path, { headers: { authorization: `bearer ${p.token}` } });
    expect(other2.status).toBe(200);
    expect(await readySent(t, LIST)).toBe(sent);
  });

  it("OAU-001 a token that expired since its answer was kept is refused (SVC2003), not answered", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    const { sent } = await readyRead(path, p.token, LIST);
    clock.advance(3_600_000); // accessTokenTtlSeconds
    try {
      const refused = await api.call("GET", path, { token: p.token });
      expect(refused.status).toBe(401);
      expect(messageId(refused.body)).toBe("SVC2003");
      expect(await readySent(t, LIST)).toBe(sent);
    } finally {
      clock.advance(-3_600_000);
    }
  });

  it("HLF-CM-006 a ready answer carries its own request id: the caller's when well-formed, else a fresh one", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    const { sent } = await readyRead(path, p.token, LIST);
    const echoed = await api.call("GET", path, { token: p.token, headers: { "x-request-id": "trace-42" } });
    const fresh = [await api.call("GET", path, { token: p.token, headers: { "x-request-id": "bad id!" } }), await api.call("GET", path, { token: p.token })];
    expect(await readySent(t, LIST)).toBe(sent + 3);
    expect(echoed.headers.get("x-request-id")).toBe("trace-42");
    const ids = fresh.map((r) => r.headers.get("x-request-id"));
    for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(ids[0]).not.toBe(ids[1]);
  });

  it("HLF-CM-006 a kept answer never goes to a request the app refuses: a second Authorization header (401), a malformed Host (400)", async () => {
    const [p, s] = [await party(), await party()];
    await api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    const { sent } = await readyRead(path, p.token, LIST);
    const host = new URL(t.url).host; // the Host the kept answer was asked with
    const status = (answer: string) => answer.split("\r\n")[0];
    const body = (answer: string) => JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
    const twice = await rawHttp(t.url, (w) => w(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${p.token}\r\nAuthorization: Bearer junk\r\nConnection: close\r\n\r\n`));
    expect(status(twice)).toBe("HTTP/1.1 401 Unauthorized");
    expect(messageId(body(twice))).toBe("SVC2003");
    const badHost = await rawHttp(t.url, (w) => w(`GET ${path} HTTP/1.1\r\nHost: a b\r\nAuthorization: Bearer ${p.token}\r\nConnection: close\r\n\r\n`));
    expect(status(badHost)).toBe("HTTP/1.1 400 Bad Request");
    expect(messageId(body(badHost))).toBe("SVC0002");
    expect(await readySent(t, LIST)).toBe(sent);
    // The same request, well-formed, is still answered from the kept bytes.
    const again = await rawHttp(t.url, (w) => w(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${p.token}\r\nConnection: close\r\n\r\n`));
    expect(status(again)).toBe("HTTP/1.1 200 OK");
    expect(await readySent(t, LIST)).toBe(sent + 1);
  });

  it("HLF-TE-002 under concurrent reads and toggles, every read made after a toggle's answer shows it", async () => {
    const pairs: { p: { address: string; token: string }; s: { address: string; token: string }; twinId: string }[] = [];
    for (let i = 0; i < 4; i++) {
      const [p, s] = [await party(), await party()];
      pairs.push({ p, s, twinId: (await api.twin(p, s)).twin.twinId });
    }
    const before = (await Promise.all([LIST, ONE, TWINNING].map((r) => readySent(t, r)))).reduce((a, b) => a + b);
    let running = true;
    let stale = 0;
    let checks = 0;
    const reads = (x: (typeof pairs)[number]) => Promise.all([
      api.call("GET", `/twinning/v1/primary/${enc(x.p.address)}/twins`, { token: x.p.token }),
      api.call("GET", `/twinning/v1/primary/${enc(x.p.address)}/twins/${x.twinId}`, { token: x.p.token }),
      api.call("GET", `/twinning/v1/secondary/${enc(x.s.address)}/twinning`, { token: x.s.token }),
    ]);
    // Readers keep the kept answers warm (bounded: they stop with the togglers).
    const readers = pairs.map(async (x) => {
      while (running) await reads(x);
    });
    const togglers = pairs.map(async (x) => {
      for (let i = 0; i < 25; i++) {
        const status = i % 2 === 0 ? "Off" : "On";
        const put = await api.call("PUT", `/twinning/v1/primary/${enc(x.p.address)}/twins/${x.twinId}/status`, { token: x.p.token, body: { status } });
        expect(put.status).toBe(200);
        const [list, one, twinning] = await reads(x);
        checks += 1;
        if (list.body.twinList.twin[0].status !== status || one.body.twin.status !== status || twinning.body.twinning.status !== status) stale += 1;
      }
    });
    await Promise.all(togglers);
    running = false;
    await Promise.all(readers);
    const after = (await Promise.all([LIST, ONE, TWINNING].map((r) => readySent(t, r)))).reduce((a, b) => a + b);
    expect(checks).toBe(100);
    expect(stale).toBe(0);
    expect(after - before).toBeGreaterThan(0); // the kept answers were in use all along
  });

  it("HLF-PD-003 with readyAnswerBytes 0 every read runs the app", async () => {
    const offApi = new Api(off.url);
    const [p, s] = [await party(off), await party(off)];
    await offApi.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins`;
    for (let i = 0; i < 3; i++) expect((await offApi.call("GET", path, { token: p.token })).status).toBe(200);
    expect(await readySent(off, LIST)).toBe(0);
  });
});

describe("ReadyAnswers", () => {
  const request = (method: string, headers: Record<string, string>) =>
    ({ method, url: "/x", headers: { host: "h", ...headers }, rawHeaders: Object.entries({ host: "h", ...headers }).flat() }) as unknown as IncomingMessage;
  const answer = (version: number, body = "{}") => ({ body, route: "/x", version, expiresAtS: 2_000_000_000 });

  it("HLF-CM-006 only a bodiless GET with one Authorization header and no query has a key, made of the host, the target and the whole header", () => {
    expect(ReadyAnswers.keyOf(request("GET", { authorization: "Bearer a" }))).toBe("h\n/x\nBearer a");
    expect(ReadyAnswers.keyOf(request("GET", { authorization: "Bearer a", "content-length": "0" }))).toBe("h\n/x\nBearer a");
    expect(ReadyAnswers.keyOf(request("GET", {}))).toBeUndefined();
    expect(ReadyAnswers.keyOf(request("HEAD", { authorization: "Bearer a" }))).toBeUndefined();
    expect(ReadyAnswers.keyOf(request("POST", { authorization: "Bearer a" }))).toBeUndefined();
    expect(ReadyAnswers.keyOf(request("GET", { authorization: "Bearer a", "content-length": "2" }))).toBeUndefined();
    expect(ReadyAnswers.keyOf(request("GET", { authorization: "Bearer a", "transfer-encoding": "chunked" }))).toBeUndefined();
    const twice = { method: "GET", url: "/x", headers: { host: "h", authorization: "Bearer a" }, rawHeaders: ["Host", "h", "Authorization", "Bearer a", "authorization", "Bearer b"] };
    expect(ReadyAnswers.keyOf(twice as unknown as IncomingMessage)).toBeUndefined();
    // A query: the routes ignore it, so each would be one more key for the same answer.
    const withQuery = { method: "GET", url: "/x?n=1", headers: { host: "h", authorization: "Bearer a" }, rawHeaders: ["Host", "h", "Authorization", "Bearer a"] };
    expect(ReadyAnswers.keyOf(withQuery as unknown as IncomingMessage)).toBeUndefined();
  });

  it("HLF-CM-006 an answer built before the last write is never kept, and a write drops every kept answer", () => {
    let version = 1;
    const answers = new ReadyAnswers({ version: () => version, nowMs: () => 0, maxBytes: 1_000 });
    answers.keep("a", answer(0));
    expect(answers.take("a")).toBeUndefined();
    answers.keep("a", answer(1));
    expect(answers.take("a")?.body.toString()).toBe("{}");
    version = 2;
    expect(answers.take("a")).toBeUndefined();
    version = 1; // even a version seen before does not bring dropped answers back
    expect(answers.take("a")).toBeUndefined();
  });

  it("HLF-CM-006 a store that cannot tell its version gets nothing kept", () => {
    const answers = new ReadyAnswers({ version: () => undefined, nowMs: () => 0, maxBytes: 1_000 });
    answers.keep("a", { ...answer(0) });
    expect(answers.take("a")).toBeUndefined();
  });

  it("HLF-CM-006 kept bytes stay within maxBytes, oldest out first", () => {
    const answers = new ReadyAnswers({ version: () => 1, nowMs: () => 0, maxBytes: 100 });
    const body = "x".repeat(39); // 39 bytes + a 1-character key: 40 bytes each
    answers.keep("a", answer(1, body));
    answers.keep("b", answer(1, body));
    answers.keep("c", answer(1, body));
    expect(answers.take("a")).toBeUndefined();
    expect(answers.take("b")).toBeDefined();
    expect(answers.take("c")).toBeDefined();
    answers.keep("d", answer(1, "y".repeat(100))); // larger than the whole budget: not kept, nothing dropped
    expect(answers.take("d")).toBeUndefined();
    expect(answers.take("b")).toBeDefined();
  });
});
