import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
let api: Api;

beforeAll(async () => {
  t = await startTestNode({ policy: { maxTwinsPerPrimary: 3 } });
  api = new Api(t.url);
});
afterAll(async () => t.cleanup());

async function party() {
  const address = newAddress();
  return { address, token: await api.subscriber(t.node.adminToken, address) };
}

describe("primary device", () => {
  it("HLF-PD-001 activates a twin from the primary with a code; the twin starts On with a twin-scoped token", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    expect(twin).toMatchObject({ primaryAddress: p.address, secondaryAddress: s.address, secondaryOperatorId: "001-01", status: "On" });
    expect(twin.twinId).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof twin.accessToken).toBe("string");
    expect(twin.resourceURL).toBe(`${t.url}/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`);
  });

  it("HLF-PD-002 toggles Off and On from the primary", async () => {
    const [p, s] = [await party(), await party()];
    const { twin } = await api.twin(p, s);
    const off = await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    expect(off.status).toBe(200);
    expect(off.body.twin.status).toBe("Off");
    const on = await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "On" } });
    expect(on.body.twin.status).toBe("On");
  });

  it("HLF-PD-003 lists twins with status and finds one by twinId, secondary address or name", async () => {
    const p = await party();
    const [s1, s2] = [await party(), await party()];
    const a = await api.twin(p, s1, "my-watch");
    await api.twin(p, s2, "my-car");
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(list.status).toBe(200);
    expect(list.body.twinList.twin.map((x: any) => [x.name, x.status])).toEqual([
      ["my-watch", "On"],
      ["my-car", "On"],
    ]);
    expect(list.body.twinList.resourceURL).toBe(`${t.url}/twinning/v1/primary/${enc(p.address)}/twins`);
    for (const ref of [a.twin.twinId, enc(s1.address), "my-watch"]) {
      const one = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${ref}`, { token: p.token });
      expect(one.status, ref).toBe(200);
      expect(one.body.twin.twinId).toBe(a.twin.twinId);
      expect(one.body.twin.accessToken).toBeUndefined();
    }
  });

  it("HLF-PD-004 deactivation from the primary removes the secondary from the list for good and revokes the twin's tokens", async () => {
    const [p, s] = [await party(), await party()];
    const { twin, primaryTwinToken } = await api.twin(p, s);
    const del = await api.call("DELETE", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: p.token });
    expect(del.status).toBe(204);
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(list.body.twinList.twin).toEqual([]);
    // Gone for good: a read finds no twin (404, as by name or address); a change of it is refused (POL1038).
    for (const ref of [twin.twinId, enc(s.address), twin.name]) {
      const again = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${ref}`, { token: p.token });
      expect([again.status, messageId(again.body)], ref).toEqual([404, "SVC0002"]);
    }
    const change = await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    expect([change.status, messageId(change.body)]).toEqual([403, "POL1038"]);
    const withTwinToken = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}`, { token: primaryTwinToken });
    expect([withTwinToken.status, messageId(withTwinToken.body)]).toEqual([401, "SVC2003"]);
    const secondary = await api.call("GET", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });
    expect(secondary.status).toBe(404);
  });

  it("HLF-PD-005 toggle, query and deactivate all work from the primary with its twin-scoped token", async () => {
    const [p, s] = [await party(), await party()];
    const { twin, primaryTwinToken } = await api.twin(p, s);
    const path = `/twinning/v1/primary/acr%3AAuthorization/twins/${twin.twinId}`;
    expect((await api.call("PUT", `${path}/status`, { token: primaryTwinToken, body: { status: "Off" } })).body.twin.status).toBe("Off");
    expect((await api.call("GET", path, { token: primaryTwinToken })).body.twin.status).toBe("Off");
    expect((await api.call("DELETE", path, { token: primaryTwinToken })).status).toBe(204);
  });

  it("HLF-PD-006 a primary has several secondaries, up to the policy limit (POL3003)", async () => {
    const p = await party();
    for (let i = 0; i < 3; i++) await api.twin(p, await party());
    const s = await party();
    const code = await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token, body: {} });
    const over = await api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, {
      token: p.token,
      body: { activationCode: code.body.activationCode.code, operatorId: "001-01" },
    });
    expect([over.status, messageId(over.body)]).toEqual([403, "POL3003"]);
    const list = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect(list.body.twinList.twin).toHaveLength(3);
  });

  it("HLF-TE-007 takes a user-chosen name, gives a default name otherwise, and renames", async () => {
    const p = await party();
    const named = await api.twin(p, await party(), "my-blue-car");
    expect(named.twin.name).toBe("my-blue-car");
    const unnamed = await api.twin(p, await party());
    expect(unnamed.twin.name).toBe("twin-1");
    const renamed = await api.call("PATCH", `/twinning/v1/primary/${enc(p.address)}/twins/twin-1`, { token: p.token, body: { name: "my-watch" } });
    expect(renamed.status).toBe(200);
    expect(renamed.body.twin.name).toBe("my-watch");
    const clash = await api.call("PATCH", `/twinning/v1/primary/${enc(p.address)}/twins/my-watch`, { token: p.token, body: { name: "my-blue-car" } });
    expect([clash.status, messageId(clash.body)]).toEqual([400, "SVC0002"]);
    const tel = await api.call("PATCH", `/twinning/v1/primary/${enc(p.address)}/twins/my-watch`, { token: p.token, body: { name: "tel:+1" } });
    expect([tel.status, messageId(tel.body)]).toEqual([400, "SVC0002"]);
  });
});
