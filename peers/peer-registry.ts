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
const jwkSchema = z.object({ kty: z.string(), kid: z.string().min(1) }).passthrough();
export const peerEntrySchema = z
  .object({
    operatorId: z.string().regex(/^\d{3}-\d{2,3}$/),
    name: z.string().optional(),
    /** Base URL of the peer's federation listener, e.g. https://fed.op2.example:8443 (TLS, so https). */
    federationUrl: z.url({ protocol: /^https$/ }),
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
export const peerListSchema = z.object({ peers: z.array(peerEntrySchema) }).strict();

export type PeerEntry = z.infer<typeof peerEntrySchema>;

export interface Peer {
  readonly operatorId: string;
  readonly name: string | undefined;
  readonly federationUrl: string;
  /** Resolves the verification key for a JWS header (kid) of this peer. */
  readonly keys: JWTVerifyGetKey;
  /** The keys from its JWKS URL, if it has one: kept across reloads while the URL stays. */
  readonly remote: RemoteJwks | undefined;
}

/** The connection a peer's JWKS is fetched over: the federation's, for a URL on the peer's federation origin. */
export type JwksDispatcherFor = (operatorId: string) => Dispatcher;

function toPeer(entry: PeerEntry, previous: Peer | undefined, federationDispatcher: JwksDispatcherFor | undefined): Peer {
  const local = entry.jwks ? createLocalJWKSet(entry.jwks as JSONWebKeySet) : undefined;
  const onFederation = entry.jwksUrl !== undefined && federationDispatcher !== undefined && new URL(entry.jwksUrl).origin === new URL(entry.federationUrl).origin;
  const remote = entry.jwksUrl
    ? previous?.remote?.url === entry.jwksUrl
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
  return { operatorId: entry.operatorId, name: entry.name, federationUrl: entry.federationUrl.replace(/\/$/, ""), keys, remote };
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
