import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFederationCa, createSigningKey, issueNodeCertificate } from "../../certs/federation-pki.ts";
import { importSigningKey, MessageSigner } from "../../peers/message-codec.ts";
import { MAX_PEER_ANSWER_BYTES, PeerClient } from "../../peers/peer-client.ts";
import { PeerRegistry } from "../../peers/peer-registry.ts";

/**
 * Our side of a call to a hostile peer: a real mutual-TLS server on loopback, with a certificate
 * from the federation CA, that answers far more than any federation answer needs, or answers
 * signed with its key, as they should be or with the signature altered.
 */
let server: Server;
let client: PeerClient;
let slowKeysClient: PeerClient;
let bytesSent = 0;
let url = "";

beforeAll(async () => {
  const ca = await createFederationCa();
  const [ours, theirs] = [await issueNodeCertificate({ ca, operatorId: "001-01" }), await issueNodeCertificate({ ca, operatorId: "002-01" })];
  const peerKey = await createSigningKey({ operatorId: "002-01" });
  const peerSigningKey = await importSigningKey(peerKey.privateJwk);
  const peerSigner = new MessageSigner("002-01", () => peerSigningKey, Date.now);
  server = createServer({ cert: theirs.certPem, key: theirs.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, async (req, res) => {
    req.resume();
    // The peer's JWKS endpoint, on its federation origin: it never answers.
    if (req.url === "/federation/v1/jwks.json") return;
    res.writeHead(200, { "content-type": "application/jose" });
    if (req.url !== "/federation/v1/activationCodes") {
      const signed = await peerSigner.sign({ aud: "001-01", htm: req.method!, htu: `${url}${req.url}`, msgId: String(req.headers["x-twinning-msgid"]), body: { answered: req.url } });
      // "/forged": one character of the signature changed.
      const sent = req.url === "/federation/v1/forged" ? `${signed.slice(0, -2)}${signed.at(-2) === "A" ? "B" : "A"}${signed.at(-1)}` : signed;
      return void res.end(sent);
    }
    const chunk = Buffer.alloc(64 * 1024, "a");
    const more = () => {
      // Up to 32 MiB, as fast as the client reads; stops when the client goes away.
      while (bytesSent < 32 * 1_048_576 && !res.destroyed) {
        bytesSent += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", more);
      }
      res.end();
    };
    more();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const registry = new PeerRegistry({ selfOperatorId: "001-01", allowed: [], load: () => ({ peers: [{ operatorId: "002-01", federationUrl: url, jwks: peerKey.jwks }] }) });
  const ourKey = await importSigningKey((await createSigningKey({ operatorId: "001-01" })).privateJwk);
  // The same peer with its keys at its JWKS URL only, fetched over the federation's connection.
  const keysByUrl = new PeerRegistry({
    selfOperatorId: "001-01",
    allowed: [],
    federationDispatcher: (operatorId) => slowKeysClient.agentFor(operatorId),
    load: () => ({ peers: [{ operatorId: "002-01", federationUrl: url, jwksUrl: `${url}/federation/v1/jwks.json` }] }),
  });
  const clientOf = (peers: PeerRegistry, timeoutMs: number) =>
    new PeerClient({
      operatorId: "001-01",
      registry: peers,
      signer: new MessageSigner("001-01", () => ourKey, Date.now),
      tls: { ca: ca.certPem, cert: ours.certPem, key: ours.keyPem },
      nowMs: Date.now,
      timeoutMs,
      maxSkewSeconds: 30,
      maxLifetimeSeconds: 60,
    });
  slowKeysClient = clientOf(keysByUrl, 300);
  client = clientOf(registry, 10_000);
});
afterAll(async () => {
  await client.close();
  await slowKeysClient.close();
  await new Promise<void>((r) => server.close(() => r()));
});

describe("calls to a peer", () => {
  it("an answer over the size bound is refused (SVC3002) and not read to its end", async () => {
    await expect(client.send("002-01", { method: "POST", path: "/activationCodes", msgId: "m-1", body: {} })).rejects.toMatchObject({
      code: "peer_unreachable",
      detail: expect.stringContaining(`answer over ${MAX_PEER_ANSWER_BYTES} bytes`),
    });
    expect(bytesSent).toBeLessThan(32 * 1_048_576);
  });

  it("an answer is accepted only with a valid signature (verified off the event loop)", async () => {
    const good = await client.send("002-01", { method: "PUT", path: "/good", msgId: "m-2", body: {} });
    expect(good).toEqual({ status: 200, body: { answered: "/federation/v1/good" } });
    await expect(client.send("002-01", { method: "PUT", path: "/forged", msgId: "m-3", body: {} })).rejects.toMatchObject({
      code: "peer_unreachable",
      detail: "answer rejected: bad signature",
    });
  });

  it("HLF-IC-006 keys fetched from the peer's JWKS URL must come within the call's deadline (300 ms here, where the fetch's own is 5 s): a JWKS that never answers fails the call in time, named as such", async () => {
    // The test's timeout (2 s) is below the fetch's own deadline: waiting for that would fail it.
    await expect(slowKeysClient.send("002-01", { method: "PUT", path: "/good", msgId: "m-4", body: {} })).rejects.toMatchObject({
      code: "peer_unreachable",
      detail: "answer rejected: signing keys unavailable",
    });
  }, 2_000);
});
