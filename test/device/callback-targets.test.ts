import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callbackDispatcher, createCallbackSender, DeliveryError } from "../../node/notifications/callback-sender.ts";
import { INTERNAL_TARGET, isInternalHostLiteral } from "../../node/notifications/callback-target.ts";
import type { OutboxEntry } from "../../node/store/store-port.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

let t: TestNode;
let api: Api;
beforeAll(async () => {
  // The production default: internal callback targets refused.
  t = await startTestNode({ limits: { allowPrivateCallbackTargets: false } });
  api = new Api(t.url);
});
afterAll(async () => t.cleanup());

describe("callback targets (SSRF)", () => {
  it("HLF-CM-005 a subscription to an internal address is refused with SVC0002 naming notifyURL", async () => {
    const a = newAddress();
    const token = await api.subscriber(t.node.adminToken, a);
    for (const notifyURL of ["http://127.0.0.1:8080/admin", "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/hook", "http://[::1]/x", "http://localhost/x", "http://192.168.1.1/"]) {
      const res = await api.call("POST", `/twinning/v1/primary/${enc(a)}/subscriptions`, { token, body: { callbackReference: { notifyURL } } });
      expect([res.status, messageId(res.body), res.body.requestError.serviceException.variables], notifyURL).toEqual([400, "SVC0002", ["callbackReference.notifyURL"]]);
      // Says why, unlike a malformed URL: the address is internal, and who may allow it.
      expect(res.body.requestError.serviceException.text, notifyURL).toContain("an internal address");
    }
  });

  it("classifies addresses: loopback, link-local, private and unique-local are internal; public ones are not", async () => {
    expect(["http://8.8.8.8/x", "https://93.184.216.34/", "http://[2606:4700:4700::1111]/"].map(isInternalHostLiteral)).toEqual([false, false, false]);
    expect(["http://100.64.0.1/", "http://172.20.0.1/", "http://[fe80::1]/", "http://[fd00::1]/", "http://0.0.0.0/"].map(isInternalHostLiteral)).toEqual([true, true, true, true, true]);
    expect(isInternalHostLiteral("http://127.0.0.1:9/")).toBe(true);
    expect(isInternalHostLiteral("http://8.8.8.8/")).toBe(false);
    expect(isInternalHostLiteral("http://[::ffff:127.0.0.1]/")).toBe(true);
    expect(isInternalHostLiteral("http://[::ffff:8.8.8.8]/")).toBe(false);
  });

  it("HLF-CM-005 also internal: documentation (RFC 5737, RFC 3849), benchmarking, multicast, reserved and broadcast IPv4, IPv6 multicast, and NAT64 or IPv4-mapped forms of internal IPv4", async () => {
    const internal = ["http://192.0.2.1/", "http://198.51.100.7/", "http://203.0.113.5/", "http://[2001:db8::1]/", "http://198.18.0.1/", "http://224.0.0.1/", "http://239.255.255.250/", "http://255.255.255.255/", "http://240.0.0.1/", "http://192.0.0.8/", "http://[ff02::1]/", "http://[64:ff9b::127.0.0.1]/", "http://[64:ff9b::7f00:1]/", "http://[::ffff:a9fe:a9fe]/"];
    expect(internal.filter((u) => !isInternalHostLiteral(u))).toEqual([]);
    expect(["http://[64:ff9b::8.8.8.8]/", "http://[64:ff9b::808:808]/", "http://198.20.0.1/"].map(isInternalHostLiteral)).toEqual([false, false, false]);
  });

  it("HLF-CM-005 also internal: IPv6 forms that carry or reach an internal IPv4 (IPv4-compatible, IPv4-translated, 6to4, Teredo, local-use NAT64), site-local, and a local name with a trailing dot; global ones are not", async () => {
    const internal = [
      "http://[::127.0.0.1]/",
      "http://[::ffff:0:7f00:1]/",
      "http://[2002:7f00:1::1]/",
      "http://[2002:c0a8:101::1]/",
      "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
      "http://[64:ff9b:1::a00:1]/",
      "http://[fec0::1]/",
      "http://[::]/",
      "http://localhost./",
      "http://api.localhost./",
    ];
    expect(internal.filter((u) => !isInternalHostLiteral(u))).toEqual([]);
    expect(["http://[2606:4700::1111]/", "http://[2002:808:808::1]/", "http://[2a00:1450:4001::200e]/"].map(isInternalHostLiteral)).toEqual([false, false, false]);
  });

  it("HLF-CM-005 the callback connection goes only to addresses checked at connect time (DNS rebinding): a name resolving to loopback is refused by the dispatcher itself", async () => {
    const server = createServer((_req, res) => res.end("reached"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const guarded = callbackDispatcher({ allowPrivateTargets: false });
    try {
      // The control: the same request through a plain agent reaches the server.
      expect(await (await request(`http://localhost:${port}/`)).body.text()).toBe("reached");
      const refused = await request(`http://localhost:${port}/`, { dispatcher: guarded }).then(
        () => "reached",
        (error: NodeJS.ErrnoException) => error.code,
      );
      expect(refused).toBe(INTERNAL_TARGET);
    } finally {
      await guarded.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("HLF-CM-005 an internal target is a final refusal (a dead letter); a name that does not resolve now is tried again", async () => {
    const dispatcher = new Agent();
    const send = createCallbackSender({ dispatcher, timeoutMs: 2_000, allowPrivateTargets: false });
    const entry = (target: string) => ({ id: 1, lane: "callback:x", kind: "callback", target, payload: "{}", attempts: 0, createdAtMs: 0 }) as unknown as OutboxEntry;
    const outcome = (target: string) => send(entry(target)).then(() => "delivered", (error: unknown) => (error instanceof DeliveryError ? (error.permanent ? "final" : "retry") : "other"));
    try {
      expect(await outcome("http://127.0.0.1:9/hook")).toBe("final");
      expect(await outcome("http://callback-host.invalid/hook")).toBe("retry");
    } finally {
      await dispatcher.close();
    }
  });
});
