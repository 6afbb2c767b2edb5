import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CallbackReceiver } from "../helpers/callback-receiver.ts";
import { Api, enc, newAddress, startTestNode } from "../helpers/test-node.ts";

const dataDir = mkdtempSync(join(tmpdir(), "twinning-restart-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe("restart on the same file", () => {
  it("HLF-TE-001 HLF-TE-002 twins, statuses, names, subscriptions, tokens and undelivered notifications survive a restart", async () => {
    const receiver = await new CallbackReceiver().start();
    receiver.status = 503; // down: the notification stays in the outbox
    const first = await startTestNode({}, { dataDir });
    const api = new Api(first.url);
    const p = { address: newAddress(), token: "" };
    const s = { address: newAddress(), token: "" };
    const pCred = await api.provision(first.node.adminToken, p.address);
    const sCred = await api.provision(first.node.adminToken, s.address);
    p.token = await api.token(p.address, pCred);
    s.token = await api.token(s.address, sCred);
    const { twin } = await api.twin(p, s, "kitchen-watch");
    await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/subscriptions`, { token: s.token, body: { callbackReference: { notifyURL: receiver.url, callbackData: "kept" } } });
    await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
    // Tried, and refused by the receiver: nothing delivered yet.
    for (let i = 0; i < 100 && receiver.attempts === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(receiver.attempts).toBeGreaterThan(0);
    expect(receiver.received).toHaveLength(0);
    await first.stop();

    receiver.status = 204;
    const second = await startTestNode({}, { dataDir });
    try {
      const api2 = new Api(second.url);
      expect(second.node.adminToken).toBe(first.node.adminToken);
      // Same signing key: tokens minted before the restart still verify.
      const list = await api2.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
      expect(list.status).toBe(200);
      expect(list.body.twinList.twin).toEqual([expect.objectContaining({ twinId: twin.twinId, name: "kitchen-watch", status: "Off" })]);
      const subs = await api2.call("GET", `/twinning/v1/secondary/${enc(s.address)}/subscriptions`, { token: s.token });
      expect(subs.body.subscriptionList.subscription).toHaveLength(1);
      // The notification committed before the restart is delivered after it, once.
      const [n] = await receiver.waitFor(1, 10_000);
      expect(n.twinningStatusNotification).toMatchObject({ twinId: twin.twinId, status: "Off", callbackData: "kept" });
      await new Promise((r) => setTimeout(r, 200));
      expect(receiver.received).toHaveLength(1);
    } finally {
      await second.stop();
      await receiver.stop();
    }
  });
});
