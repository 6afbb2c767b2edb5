import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PeerRegistry } from "../../peers/peer-registry.ts";
import { RemoteJwks } from "../../peers/remote-jwks.ts";

/** A peer's JWKS endpoint on loopback whose answer the test sets; counts the fetches. */
let server: Server;
let url: string;
let answer: { status: number; body: string; delayMs?: number };
let fetches = 0;
let key1: JWK;
let key2: JWK;

beforeAll(async () => {
  const publicJwk = async (kid: string) => ({ ...(await exportJWK((await generateKeyPair("ES256", { extractable: true })).publicKey)), kid, alg: "ES256" });
  [key1, key2] = [await publicJwk("k1"), await publicJwk("k2")];
  server = createServer((_req, res) => {
    fetches++;
    const { status, body, delayMs } = answer;
    setTimeout(() => res.writeHead(status, { "content-type": "application/json" }).end(body), delayMs ?? 0);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const serve = (keys: JWK[], status = 200) => (answer = { status, body: JSON.stringify({ keys }) });
const token = { payload: "", signature: "" } as never;
const keyFor = (jwks: RemoteJwks, kid: string) => jwks.getKey({ alg: "ES256", kid }, token);

describe("a peer's keys from its JWKS URL", () => {
  it("a reload of the peer list keeps a peer's fetched keys while its JWKS URL stays, and drops them when it changes", async () => {
    let jwksUrl = url;
    const registry = new PeerRegistry({ selfOperatorId: "001-01", allowed: [], load: () => ({ peers: [{ operatorId: "002-01", federationUrl: "https://127.0.0.1:1", jwksUrl }] }) });
    const first = registry.get("002-01")!.remote;
    registry.reload();
    expect(registry.get("002-01")!.remote).toBe(first);
    jwksUrl = `${url}?v=2`;
    registry.reload();
    expect(registry.get("002-01")!.remote).not.toBe(first);
  });

  it("HLF-IC-001 a reload keeps a peer's fetched keys only while they are fetched the same way: a corrected federationUrl that moves the JWKS URL onto the federation's origin gets a new fetcher, set for the federation's connection", async () => {
    let federationUrl = "https://localhost:9443";
    const jwksUrl = "https://127.0.0.1:9443/federation/v1/jwks.json";
    const dispatcher = { dispatch: () => true } as never;
    const registry = new PeerRegistry({ selfOperatorId: "001-01", allowed: [], federationDispatcher: () => dispatcher, load: () => ({ peers: [{ operatorId: "002-01", federationUrl, jwksUrl }] }) });
    const typo = registry.get("002-01")!;
    expect(typo.remoteOnFederation).toBe(false);
    federationUrl = "https://127.0.0.1:9443";
    registry.reload();
    const fixed = registry.get("002-01")!;
    expect(fixed.remoteOnFederation).toBe(true);
    expect(fixed.remote).not.toBe(typo.remote);
    registry.reload();
    expect(registry.get("002-01")!.remote).toBe(fixed.remote);
  });

  it("HLF-IC-001 a peer list is refused at load, the current one kept, when it lists an operator twice, holds a key that cannot be imported or a private key, or a federationUrl with userinfo, a query or a fragment", () => {
    let peers: unknown[] = [{ operatorId: "002-01", federationUrl: "https://127.0.0.1:1", jwks: { keys: [key1] } }];
    const registry = new PeerRegistry({ selfOperatorId: "001-01", allowed: [], load: () => ({ peers }) });
    const good = registry.get("002-01");
    const refused = (list: unknown[], why: RegExp) => {
      peers = list;
      expect(() => registry.reload()).toThrow(why);
      expect(registry.get("002-01")).toBe(good);
    };
    const entry = (over: object) => ({ operatorId: "002-01", federationUrl: "https://127.0.0.1:1", jwks: { keys: [key1] }, ...over });
    refused([entry({}), entry({ federationUrl: "https://127.0.0.1:2" })], /peers\.1\.operatorId: 002-01 is listed twice/);
    const { x: _x, y: _y, ...noPoint } = key1;
    refused([entry({ jwks: { keys: [noPoint] } })], /peers\.0\.jwks\.keys\.0: not a valid public key/);
    refused([entry({ jwks: { keys: [{ kty: "garbage", kid: "g" }] } })], /not an EC P-256 \(ES256\) or OKP Ed25519 \(EdDSA\) key/);
    refused([entry({ jwks: { keys: [{ ...key1, d: "AAAA" }] } })], /a private key/);
    for (const federationUrl of ["https://user:pw@p.example", "https://p.example/?x=1", "https://p.example/#frag"]) refused([entry({ federationUrl })], /no userinfo, query or fragment/);
    peers = [entry({ jwks: { keys: [key1, key2] } })];
    expect(registry.reload()).toBe(1);
  });

  it("the last good keys keep verifying while the peer's JWKS endpoint fails, also once they are old", async () => {
    serve([key1]);
    const jwks = new RemoteJwks({ url, maxAgeMs: 0, cooldownMs: 0 });
    expect(await keyFor(jwks, "k1")).toBeDefined();
    serve([], 503);
    const before = fetches;
    // Older than maxAgeMs (0) by at least a millisecond of Date.now(), or no refresh is due.
    await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < 3; i++) expect(await keyFor(jwks, "k1")).toBeDefined();
    await new Promise((r) => setTimeout(r, 50)); // the background refreshes have failed by now
    expect(fetches).toBeGreaterThan(before);
    expect(await keyFor(jwks, "k1")).toBeDefined();
  });

  it("an unknown kid (a rotation) fetches again, at most once per cooldown", async () => {
    serve([key1]);
    const jwks = new RemoteJwks({ url, cooldownMs: 60_000 });
    expect(await keyFor(jwks, "k1")).toBeDefined();
    const before = fetches;
    serve([key1, key2]);
    // The first fetch was just now: within the cooldown, an unknown kid is refused without a fetch.
    await expect(keyFor(jwks, "k2")).rejects.toThrow();
    expect(fetches).toBe(before);
    const fresh = new RemoteJwks({ url, cooldownMs: 0 });
    serve([key1]);
    await keyFor(fresh, "k1");
    serve([key1, key2]);
    expect(await keyFor(fresh, "k2")).toBeDefined();
  });

  it("messages that meet a new kid while its fetch is under way wait for that fetch instead of being refused within its cooldown", async () => {
    serve([key1]);
    const jwks = new RemoteJwks({ url, cooldownMs: 200 });
    expect(await keyFor(jwks, "k1")).toBeDefined();
    await new Promise((r) => setTimeout(r, 250));
    const before = fetches;
    answer = { status: 200, body: JSON.stringify({ keys: [key1, key2] }), delayMs: 100 };
    const found = await Promise.allSettled([keyFor(jwks, "k2"), keyFor(jwks, "k2"), keyFor(jwks, "k2")]);
    expect(found.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    expect(fetches).toBe(before + 1);
  });

  it("a JWKS over the byte or key bound is refused, and earlier keys stay", async () => {
    answer = { status: 200, body: JSON.stringify({ keys: [key1], padding: "x".repeat(70_000) }) };
    const big = new RemoteJwks({ url, cooldownMs: 0 });
    await expect(keyFor(big, "k1")).rejects.toThrow(/larger than/);
    serve(Array.from({ length: 21 }, (_, i) => ({ ...key1, kid: `k${i}` })));
    await expect(keyFor(big, "k1")).rejects.toThrow(/1 to 20 keys/);
    serve([key1]);
    const kept = new RemoteJwks({ url, maxAgeMs: 0, cooldownMs: 0 });
    expect(await keyFor(kept, "k1")).toBeDefined();
    answer = { status: 200, body: JSON.stringify({ keys: [key2], padding: "x".repeat(70_000) }) };
    expect(await keyFor(kept, "k1")).toBeDefined();
    await new Promise((r) => setTimeout(r, 50));
    expect(await keyFor(kept, "k1")).toBeDefined();
  });
});
