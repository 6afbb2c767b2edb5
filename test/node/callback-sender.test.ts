import { createServer, type Server } from "node:http";
import { Agent } from "undici";
import { onLoopback } from "../helpers/loopback-server.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCallbackSender, DeliveryError } from "../../node/notifications/callback-sender.ts";
import type { OutboxEntry } from "../../node/store/store-port.ts";

/** A callback receiver on loopback that answers whole, refuses, or answers its status and then stalls. */
let server: Server;
let base = "";
let stop: () => Promise<void>;
const received: string[] = [];
const deliveryIds: (string | string[] | undefined)[] = [];
const agent = new Agent({ keepAliveTimeout: 1_000 });

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += String(chunk)));
    req.on("end", () => {
      received.push(`${req.url} ${body}`);
      deliveryIds.push(req.headers["x-notification-delivery-id"]);
      if (req.url === "/ok") return void res.end("thanks");
      if (req.url === "/refuse") return void res.writeHead(500).end("x".repeat(10_000));
      // "/stall": accepted, then the body never ends.
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("accepted");
    });
  });
  ({ base, stop } = await onLoopback(server));
});

afterAll(async () => {
  await agent.destroy();
  await stop();
});

const entry = (path: string): OutboxEntry => ({ id: 1, lane: "callback:s1", kind: "callback", target: `${base}${path}`, payload: '{"n":1}', attempts: 0, createdAtMs: 0, lastError: undefined });
const send = createCallbackSender({ dispatcher: agent, timeoutMs: 300, allowPrivateTargets: true });

describe("callback delivery", () => {
  it("HLF-PD-007 a 2xx answer delivers the notification (its body POSTed as given)", async () => {
    await expect(send(entry("/ok"))).resolves.toBeUndefined();
    expect(received).toContain('/ok {"n":1}');
  });

  it("HLF-PD-007 every attempt of one notification to one subscription carries the same delivery id (x-notification-delivery-id), so a receiver can drop a repeat", async () => {
    deliveryIds.length = 0;
    await send({ ...entry("/ok"), id: 41 });
    await send({ ...entry("/ok"), id: 41, attempts: 1 });
    await send({ ...entry("/ok"), id: 42 });
    expect(deliveryIds).toEqual(["41", "41", "42"]);
  });

  it("a refusal is a DeliveryError with the receiver's status and the start of its answer, read no further than 4 KiB", async () => {
    const error = await send(entry("/refuse")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeliveryError);
    expect(error).toMatchObject({ status: 500, permanent: false });
    expect((error as Error).message).toBe(`callback answered 500: ${"x".repeat(120)}`);
  });

  it("a receiver that sent a 2xx status and then stalls has accepted the notification: delivered, not sent again", async () => {
    await expect(send(entry("/stall"))).resolves.toBeUndefined();
  });
});
