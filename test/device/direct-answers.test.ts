import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { rawHttp } from "../helpers/raw-http.ts";
import { enc, nodeForFile } from "../helpers/test-node.ts";

// Direct routes (node/http/direct-answers.ts): the twin toggles are answered on node:http
// before the app. Every request here is sent both ways: directly and, with a query
// (which the direct routes leave to the app, and the app ignores), through the app; the
// answers must be the same, and /metrics must show that the direct one was really taken.

const file = nodeForFile();

const PRIMARY_ROUTE = "/twinning/v1/primary/:addr/twins/:ref/status";
const SECONDARY_ROUTE = "/twinning/v1/secondary/:addr/twinning/status";

const party = file.party;

/** Direct answers so far, over both routes, from the node's Prometheus metrics. */
async function directAnswers(): Promise<number> {
  const text = await (await fetch(`${file.t.url}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("twinning_http_direct_answers_total{"))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

interface Sent {
  status: number;
  body: string;
  headers: Record<string, string>;
}

async function send(path: string, init: { method: string; headers: Record<string, string>; body: string }): Promise<Sent> {
  const res = await fetch(`${file.t.url}${path}`, init);
  const body = await res.text();
  const headers: Record<string, string> = {};
  for (const name of ["content-type", "content-length", "retry-after", "www-authenticate", "x-request-id"]) {
    const value = res.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  return { status: res.status, body, headers };
}

/** Escaped `%` and `.` are left to the app (it decodes paths its own way). */
const LEFT_TO_THE_APP = /%(25|2e)/i;

/** The same request directly and through the app, in the given order; checks the direct one was taken there. */
async function bothWays(path: string, init: { method: string; headers: Record<string, string>; body: string }, directFirst: boolean) {
  const viaDirect = async () => {
    const before = await directAnswers();
    const answer = await send(path, init);
    expect(await directAnswers(), `direct route taken or not for ${init.method} ${path}`).toBe(before + (LEFT_TO_THE_APP.test(path) ? 0 : 1));
    return answer;
  };
  const viaApp = async () => {
    const before = await directAnswers();
    const answer = await send(`${path}?via=app`, init);
    expect(await directAnswers()).toBe(before);
    return answer;
  };
  if (directFirst) {
    const direct = await viaDirect();
    return { direct, app: await viaApp() };
  }
  const app = await viaApp();
  return { direct: await viaDirect(), app };
}

describe("direct routes", () => {
  it("HLF-PD-002 HLF-SD-004 every toggle request, well formed or not, gets the same answer directly as through the app", async () => {
    const [p1, s1, p2, s2, p3, s3, stranger] = [await party(), await party(), await party(), await party(), await party(), await party(), await party()];
    const one = await file.api.twin(p1, s1, "watch");
    const two = await file.api.twin(p2, s2);
    const ended = await file.api.twin(p3, s3);
    expect((await file.api.call("DELETE", `/twinning/v1/primary/${enc(p3.address)}/twins/${ended.twin.twinId}`, { token: p3.token })).status).toBe(204);

    const tokens = {
      p1: p1.token,
      s1: s1.token,
      p2: p2.token,
      stranger: stranger.token,
      twinScoped: one.primaryTwinToken,
      otherTwinScoped: two.primaryTwinToken,
      garbage: "not.a.token",
    };
    const addresses = [p1.address, s1.address, p2.address, s2.address, p3.address, stranger.address, "acr:Authorization", "tel:abc", "tel:+1%20555"];
    const refs = [one.twin.twinId, two.twin.twinId, ended.twin.twinId, "00000000-0000-4000-8000-000000000000", s1.address, "watch", "twin-1", "no-such-name"];
    const bodies = ['{"status":"On"}', '{"status":"Off"}', '{"status":"on"}', '{"status":"On","extra":1}', "{}", "[]", "null", "not json", "", '{"status":'];
    const types = ["application/json", "application/json; charset=utf-8", "application/merge-patch+json", "APPLICATION/JSON", "application/json ; charset=utf-8", "application/json;"];

    await fc.assert(
      fc.asyncProperty(
        fc.record({
          primary: fc.boolean(),
          address: fc.constantFrom(...addresses),
          encoded: fc.boolean(),
          ref: fc.constantFrom(...refs),
          token: fc.option(fc.constantFrom(...(Object.keys(tokens) as (keyof typeof tokens)[])), { nil: undefined }),
          body: fc.constantFrom(...bodies),
          type: fc.constantFrom(...types),
          requestId: fc.boolean(),
          directFirst: fc.boolean(),
        }),
        async (r) => {
          const addr = r.encoded ? enc(r.address) : r.address;
          const path = r.primary ? `/twinning/v1/primary/${addr}/twins/${enc(r.ref)}/status` : `/twinning/v1/secondary/${addr}/twinning/status`;
          const headers: Record<string, string> = { "content-type": r.type };
          if (r.token) headers.authorization = `Bearer ${tokens[r.token]}`;
          if (r.requestId) headers["x-request-id"] = "req-direct-1";
          const { direct, app } = await bothWays(path, { method: "PUT", headers, body: r.body }, r.directFirst);
          expect(direct.status).toBe(app.status);
          expect(direct.body).toBe(app.body);
          if (!r.requestId) {
            expect(direct.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
            delete direct.headers["x-request-id"];
            delete app.headers["x-request-id"];
          }
          expect(direct.headers).toEqual(app.headers);
        },
      ),
      { numRuns: 120 },
    );
  });

  it("HLF-PD-002 a direct toggle is committed, notified and counted under its route like any other", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await file.api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`;
    const before = await directAnswers();
    const answer = await file.api.call("PUT", path, { token: p.token, body: { status: "Off" } });
    expect(answer.status).toBe(200);
    expect(answer.body.twin).toMatchObject({ twinId: twin.twinId, status: "Off" });
    expect(await directAnswers()).toBe(before + 1);
    expect((await file.api.call("GET", path.replace(/\/status$/, ""), { token: p.token })).body.twin.status).toBe("Off");
    const feed = await file.t.node.context.store.notificationsAfter(s.address, "secondary", 0, 100);
    expect(feed.at(-1)).toMatchObject({ type: "twinningStatusNotification", content: { status: "Off" } });
    const metrics = await (await fetch(`${file.t.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`twinning_http_requests_total\\{method="PUT",route="${PRIMARY_ROUTE.replaceAll("/", "\\/")}",status="200"\\} [1-9]`));
    // The secondary's toggle is direct too, and counted under its route.
    const secondaryOk = async () => {
      const line = (await (await fetch(`${file.t.url}/metrics`)).text()).split("\n").find((l) => l.startsWith(`twinning_http_requests_total{method="PUT",route="${SECONDARY_ROUTE}",status="200"}`));
      return line ? Number(line.split(" ").pop()) : 0;
    };
    const secondaryBefore = await secondaryOk();
    const back = await file.api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "On" } });
    expect(back.status).toBe(200);
    expect(await directAnswers()).toBe(before + 2);
    expect(await secondaryOk()).toBe(secondaryBefore + 1);
  });

  it("requests that are not plainly well formed on the wire go to the app, which answers them as before", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await file.api.twin(p, s);
    const path = `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`;
    const body = '{"status":"Off"}';
    const before = await directAnswers();
    const raw = (lines: string[], payload = body) => rawHttp(file.t.url, (write) => write(`${lines.join("\r\n")}\r\n\r\n${payload}`));
    const host = new URL(file.t.url).host;
    // Chunked, a query, two Authorization headers, a dot segment, a text body, a POST.
    const chunked = await raw([`PUT ${path} HTTP/1.1`, `Host: ${host}`, `Authorization: Bearer ${p.token}`, "Content-Type: application/json", "Transfer-Encoding: chunked", "Connection: close"], `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
    expect(chunked).toMatch(/^HTTP\/1\.1 200/);
    expect((await file.api.call("PUT", `${path}?x=1`, { token: p.token, body: { status: "On" } })).status).toBe(200);
    const twice = await raw([`PUT ${path} HTTP/1.1`, `Host: ${host}`, `Authorization: Bearer ${p.token}`, `Authorization: Bearer ${p.token}`, "Content-Type: application/json", `Content-Length: ${body.length}`, "Connection: close"]);
    expect(twice).toMatch(/^HTTP\/1\.1 401/);
    const dotted = await raw([`PUT /twinning/v1/primary/${enc(p.address)}/twins/x/../${twin.twinId}/status HTTP/1.1`, `Host: ${host}`, `Authorization: Bearer ${p.token}`, "Content-Type: application/json", `Content-Length: ${body.length}`, "Connection: close"]);
    expect(dotted).toMatch(/^HTTP\/1\.1 200/);
    const text = await raw([`PUT ${path} HTTP/1.1`, `Host: ${host}`, `Authorization: Bearer ${p.token}`, "Content-Type: text/plain", `Content-Length: ${body.length}`, "Connection: close"]);
    expect(text).toMatch(/^HTTP\/1\.1 400[\s\S]*SVC0002[\s\S]*Content-Type/);
    expect((await file.api.call("POST", path, { token: p.token, body: { status: "On" } })).status).toBe(404);
    expect(await directAnswers()).toBe(before);
  });
});
