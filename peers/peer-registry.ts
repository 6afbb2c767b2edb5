import { createPublicKey, type JsonWebKey } from "node:crypto";
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { RemoteJwks } from "./remote-jwks.ts";
import type { Dispatcher } from "undici";
import { z } from "zod";

/**
 * The peer operators this node federates with (DESIGN "Federation API"): operator id,
 * federation URL and signing keys, inline (a JWKS, several keys during a rotation overlap) or
 * from the peer's JWKS URL (RemoteJwks: refetched when an unknown kid shows up, the last good
 * keys kept through an outage and across reloads). Reloadable without a restart: `reload()`
 * swaps the whole table atomically, or keeps the old one if the new is bad.
 */
/**
 * A peer's public signing key, as DESIGN's algorithms need it (EC P-256 for ES256, OKP Ed25519
 * for EdDSA), checked when the list is loaded: a key that cannot be imported would otherwise pass
 * the reload and fail every message later as "unknown kid". A private key has no place here.
 */
const jwkSchema = z
  .object({ kty: z.string(), kid: z.string().min(1) })
  .passthrough()
  .superRefine((jwk, ctx) => {
    if ("d" in jwk) return void ctx.addIssue({ code: "custom", message: "a private key (it has d): a peer's file holds public keys only" });
    const curve = (jwk as { crv?: unknown }).crv;
    if (!((jwk.kty === "EC" && curve === "P-256") || (jwk.kty === "OKP" && curve === "Ed25519"))) {
      return void ctx.addIssue({ code: "custom", message: "not an EC P-256 (ES256) or OKP Ed25519 (EdDSA) key" });
    }
    try {
      createPublicKey({ key: jwk as JsonWebKey, format: "jwk" });
    } catch {
      ctx.addIssue({ code: "custom", message: "not a valid public key" });
    }
  });
/** An https origin and base path only: userinfo, a query or a fragment would end up around the paths appended to it. */
const plainHttpsUrl = () =>
  z.url({ protocol: /^https$/ }).refine((u) => {
    const url = new URL(u);
    return url.username === "" && url.password === "" && url.search === "" && url.hash === "";
  }, "no userinfo, query or fragment");
export const peerEntrySchema = z
  .object({
    operatorId: z.string().regex(/^\d{3}-\d{2,3}$/),
    name: z.string().optional(),
    /** Base URL of the peer's federation listener, e.g. https://fed.op2.example:8443 (TLS, so https). */
    federationUrl: plainHttpsUrl(),
    jwks: z.object({ keys: z.array(jwkSchema).min(1) }).optional(),
    /**
     * Where the peer publishes its signing keys. On the peer's federation origin (its
     * `/federation/v1/jwks.json`), fetched over the federation's mutual TLS; elsewhere, with the
     * system's trust (an http URL trusts the network path).
     */
    jwksUrl: z.url({ protocol: /^https?$/ }).optional(),
  })
  .strict()
  .refine((p) => p.jwks !== undefined || p.jwksUrl !== undefined, { message: "a peer needs jwks or jwksUrl" });
export const peerListSchema = z
  .object({ peers: z.array(peerEntrySchema) })
  .strict()
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.peers.forEach((p, i) => {
      if (seen.has(p.operatorId)) ctx.addIssue({ code: "custom", path: ["peers", i, "operatorId"], message: `${p.operatorId} is listed twice` });
      seen.add(p.operatorId);
    });
  });

export type PeerEntry = z.infer<typeof peerEntrySchema>;

export interface Peer {
  readonly operatorId: string;
  readonly name: string | undefined;
  readonly federationUrl: string;
  /** Resolves the verification key for a JWS header (kid) of this peer. */
  readonly keys: JWTVerifyGetKey;
  /** The keys from its JWKS URL, if it has one: kept across reloads while the URL and the connection it is fetched over stay. */
  readonly remote: RemoteJwks | undefined;
  /** Whether `remote` is fetched over the federation's mutual TLS (a URL on the peer's federation origin). */
  readonly remoteOnFederation: boolean;
}

/** The connection a peer's JWKS is fetched over: the federation's, for a URL on the peer's federation origin. */
export type JwksDispatcherFor = (operatorId: string) => Dispatcher;

function toPeer(entry: PeerEntry, previous: Peer | undefined, federationDispatcher: JwksDispatcherFor | undefined): Peer {
  const local = entry.jwks ? createLocalJWKSet(entry.jwks as JSONWebKeySet) : undefined;
  const onFederation = entry.jwksUrl !== undefined && federationDispatcher !== undefined && new URL(entry.jwksUrl).origin === new URL(entry.federationUrl).origin;
  // Kept only if fetched the same way: a corrected federationUrl can move the JWKS URL on or off
  // the federation's origin, and with it the connection (and the trust) it needs.
  const remote = entry.jwksUrl
    ? previous?.remote?.url === entry.jwksUrl && previous.remoteOnFederation === onFederation
      ? previous.remote
      : new RemoteJwks({ url: entry.jwksUrl, ...(onFederation ? { dispatcher: () => federationDispatcher(entry.operatorId) } : {}) })
    : undefined;
  const keys: JWTVerifyGetKey = async (header, token) => {
    if (local) {
      try {
        return await local(header, token);
      } catch (error) {
        if (!remote) throw error;
      }
    }
    return remote!.getKey(header, token);
  };
  return { operatorId: entry.operatorId, name: entry.name, federationUrl: entry.federationUrl.replace(/\/$/, ""), keys, remote, remoteOnFederation: onFederation };
}

export class PeerRegistry {
  #peers = new Map<string, Peer>();
  readonly #load: () => unknown;
  readonly #allowed: ReadonlySet<string>;
  readonly #self: string;
  readonly #federationDispatcher: JwksDispatcherFor | undefined;

  /**
   * @param load returns `{peers:[…]}` (re-read on every reload)
   * @param allowed policy's allowedPeerOperators; empty means every listed peer
   */
  constructor(options: { selfOperatorId: string; load: () => unknown; allowed: readonly string[]; federationDispatcher?: JwksDispatcherFor }) {
    this.#load = options.load;
    this.#federationDispatcher = options.federationDispatcher;
    this.#allowed = new Set(options.allowed);
    this.#self = options.selfOperatorId;
    this.reload();
  }

  /** Re-reads the peer list; throws (keeping the current table) when it is invalid. */
  reload(): number {
    const parsed = peerListSchema.safeParse(this.#load());
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`invalid peer list: ${issue?.path.join(".") ?? ""}: ${issue?.message ?? "invalid"}`);
    }
    const next = new Map<string, Peer>();
    for (const entry of parsed.data.peers) {
      if (entry.operatorId === this.#self) continue;
      if (this.#allowed.size > 0 && !this.#allowed.has(entry.operatorId)) continue;
      next.set(entry.operatorId, toPeer(entry, this.#peers.get(entry.operatorId), this.#federationDispatcher));
    }
    this.#peers = next;
    return next.size;
  }

  get(operatorId: string): Peer | undefined {
    return this.#peers.get(operatorId);
  }

  list(): Peer[] {
    return [...this.#peers.values()];
  }
}
