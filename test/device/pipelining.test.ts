import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inRequestOrder } from "../../node/http/request-order.ts";
import { rawHttp } from "../helpers/raw-http.ts";
import { Api, enc, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

/**
 * Requests pipelined on one connection (sent in one write, before any answer): each takes effect
 * in the order sent, whether the read behind a change is answered from a ready answer or by the
 * app (RFC 9112 §9.3.2).
 */
const nodes: TestNode[] = [];
beforeAll(async () => {
  nodes.push(await startTestNode({}), await startTestNode({ limits: { readyAnswerBytes: 0 } }));
});
afterAll(async () => {
  for (const t of nodes) await t.cleanup();
});

describe("pipelined requests", () => {
  for (const [i, what] of ["with ready answers", "without ready answers"].entries()) {
    it(`HLF-TE-002 a read pipelined behind a toggle on one connection sees the toggle, and a toggle behind a read is not seen by it (${what})`, async () => {
      const t = nodes[i]!;
      const api = new Api(t.url);
      const party = async () => {
        const address = newAddress();
        return { address, token: await api.subscriber(t.node.adminToken, address) };
      };
      const [p, s] = [await party(), await party()];
      await api.twin(p, s);
      const host = new URL(t.url).host;
      const read = `/twinning/v1/secondary/${enc(s.address)}/twinning`;
      // Read twice first, so a ready answer of the current state is kept.
      for (let k = 0; k < 2; k++) expect((await api.call("GET", read, { token: s.token })).body.twinning.status).toBe("On");
      const get = `GET ${read} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${s.token}\r\n\r\n`;
      const put = (status: string) => {
        const body = JSON.stringify({ status });
        return `PUT ${read}/status HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      };
      const close = `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
      const readySent = async () => {
        const line = (await (await fetch(`${t.url}/metrics`)).text()).split("\n").find((l) => l.startsWith('twinning_http_ready_answers_total{route="/twinning/v1/secondary/:addr/twinning"}'));
        return line ? Number(line.split(" ").pop()) : 0;
      };
      const readyBefore = await readySent();
      for (const [before, after] of [["On", "Off"], ["Off", "On"], ["On", "Off"]] as const) {
        const out = await rawHttp(t.url, (write) => write(get + put(after) + get + close));
        const statuses = [...out.matchAll(/"status":"(On|Off)"/g)].map((m) => m[1]);
        expect(statuses, out.slice(0, 300)).toEqual([before, after, after]);
      }
      // With them, each pipeline's first read (nothing written since the last) was a ready answer.
      expect((await readySent()) - readyBefore).toBe(i === 0 ? 3 : 0);
    });
  }
});

describe("inRequestOrder", () => {
  /** A server whose "/slow" takes 100 ms to take effect; what took effect, in order, and the socket's end. */
  async function orderedServer() {
    const applied: string[] = [];
    const server = createServer(
      inRequestOrder((req: IncomingMessage, res: ServerResponse) => {
        const apply = () => {
          applied.push(`${req.method} ${req.url}`);
          res.end("ok");
        };
        if (req.url === "/slow") setTimeout(apply, 100);
        else apply();
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const send = async (text: string, closeAfterMs?: number) => {
      const socket = connect(port, "127.0.0.1");
      socket.on("error", () => undefined);
      socket.resume();
      await new Promise((resolve) => socket.once("connect", resolve));
      socket.write(text);
      if (closeAfterMs !== undefined) setTimeout(() => socket.destroy(), closeAfterMs);
      await new Promise((resolve) => socket.once("close", resolve));
    };
    return { applied, send, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }
  const request = (method: string, path: string, last = false) => `${method} ${path} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n${last ? "Connection: close\r\n" : ""}\r\n`;

  it("HLF-TE-002 pipelined requests run one after another, in the order sent, each once the answer before it has gone", async () => {
    const s = await orderedServer();
    try {
      await s.send(request("PUT", "/slow") + request("GET", "/fast") + request("PUT", "/fast", true));
      expect(s.applied).toEqual(["PUT /slow", "GET /fast", "PUT /fast"]);
    } finally {
      await s.close();
    }
  });

  it("HLF-TE-002 requests pipelined behind one whose client left never run (they ran at once, before the earlier change took effect)", async () => {
    const s = await orderedServer();
    try {
      await s.send(request("PUT", "/slow") + request("PUT", "/fast") + request("PUT", "/fast", true), 30);
      // Until the slow one has taken effect, and a while after.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(s.applied).toEqual(["PUT /slow"]);
    } finally {
      await s.close();
    }
  });
});
