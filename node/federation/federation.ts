import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { operatorOfCertificate } from "../../certs/federation-pki.ts";
import type { JWK } from "jose";
import type { FederationOptions } from "../config/node-config.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import { MessageSigner, importSigningKey, signCompact, type SigningKey } from "../../peers/message-codec.ts";
import { noAnswer, PeerClient, type PeerAnswer } from "../../peers/peer-client.ts";
import { PeerRegistry } from "../../peers/peer-registry.ts";
import type { Logger } from "pino";

export interface FederationMessage {
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  readonly path: string;
  readonly msgId: string;
  readonly body?: unknown;
}

/**
 * This node's side of the federation: who the peers are (reloadable), our signing keys (the
 * first signs, all are published so a rotation has an overlap), the signer and the mTLS client.
 */
export class Federation {
  readonly operatorId: string;
  readonly options: FederationOptions;
  readonly registry: PeerRegistry;
  readonly client: PeerClient;
  readonly signer: MessageSigner;
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string };
  #keys: SigningKey[] = [];
  #publicJwks: JWK[] = [];
  readonly #nowMs: () => number;
  /** The federation base URL peers use for us (set once the listener is bound). */
  publicUrl = "";
  readonly #extensions = new Map<string, { batch: boolean; untilMs: number }>();
  /** Where each outgoing message is logged (`federation message`): for operators and the simulator's report. */
  logger: Logger | undefined;
  /** Told of every call to a peer, answered (its status) or not (status 0), by route template. */
  onCall: ((call: { peer: string; route: string; status: number; seconds: number }) => void) | undefined;

  private constructor(operatorId: string, options: FederationOptions, registry: PeerRegistry, nowMs: () => number, onConnect?: (operatorId: string) => void) {
    this.operatorId = operatorId;
    this.options = options;
    this.registry = registry;
    this.#nowMs = nowMs;
    this.tls = { ca: readFileSync(options.caFile, "utf8"), cert: readFileSync(options.certFile, "utf8"), key: readFileSync(options.keyFile, "utf8") };
    assertOwnCertificate(this.tls, operatorId, options.certFile);
    this.signer = new MessageSigner(operatorId, () => this.#keys[0]!, nowMs, options.maxMessageLifetimeSeconds);
    this.client = new PeerClient({
      operatorId,
      registry,
      signer: this.signer,
      tls: this.tls,
      nowMs,
      timeoutMs: options.callTimeoutMs,
      maxSkewSeconds: options.maxClockSkewSeconds,
      maxLifetimeSeconds: options.maxMessageLifetimeSeconds,
      ...(onConnect ? { onConnect } : {}),
    });
  }

  static async create(input: {
    operatorId: string;
    options: FederationOptions;
    allowedPeers: readonly string[];
    nowMs: () => number;
    onConnect?: (operatorId: string) => void;
  }): Promise<Federation> {
    const { options } = input;
    let federation: Federation | undefined;
    const registry = new PeerRegistry({
      selfOperatorId: input.operatorId,
      allowed: input.allowedPeers,
      load: () => (options.peersFile ? readJsonFile(options.peersFile, "peer list") : { peers: [] }),
      // Asked only when a key set is fetched, once the federation exists.
      federationDispatcher: (operatorId) => federation!.client.agentFor(operatorId),
    });
    federation = new Federation(input.operatorId, options, registry, input.nowMs, input.onConnect);
    await federation.#loadKeys();
    return federation;
  }

  async #loadKeys(): Promise<void> {
    this.#useKeys(await this.#readKeys());
  }

  /** Our signing keys from their files, imported; nothing changes until #useKeys. */
  async #readKeys(): Promise<{ jwks: JWK[]; keys: SigningKey[] }> {
    const jwks = this.options.signingKeyFiles.map((file) => readJsonFile(file, "signing key") as JWK);
    return { jwks, keys: await Promise.all(jwks.map(importSigningKey)) };
  }

  #useKeys({ jwks, keys }: { jwks: JWK[]; keys: SigningKey[] }): void {
    this.#publicJwks = jwks.map(({ d: _d, ...pub }) => ({ ...pub, use: "sig" }));
    this.#keys = keys;
  }

  /** Re-reads the peer list and our signing keys; on a bad file of either, both stay as they were. */
  async reload(): Promise<{ peers: number; keys: number }> {
    const keys = await this.#readKeys();
    const peers = this.registry.reload();
    this.#useKeys(keys);
    return { peers, keys: this.#keys.length };
  }

  /** Our public signing keys, for peers (`/federation/v1/jwks.json`, `/.well-known/federation-jwks.json`). */
  jwks(): { keys: JWK[] } {
    return { keys: this.#publicJwks };
  }

  /**
   * Whether a peer understands our "batch" extension (advertised in its GET /operator); asked
   * once and remembered for ten minutes. A peer that does not gets one message per request; one
   * whose answer we cannot take is asked again after a minute, one that did not answer next time.
   */
  async supportsBatch(operatorId: string): Promise<boolean> {
    const known = this.#extensions.get(operatorId);
    if (known && this.#nowMs() < known.untilMs) return known.batch;
    let batch = false;
    try {
      const answer = await this.send(operatorId, { method: "GET", path: "/operator", msgId: `operator-${this.#nowMs()}` });
      batch = answer.status === 200 && Array.isArray(answer.body?.extensions) && answer.body.extensions.includes("batch");
    } catch (error) {
      if (noAnswer(error)) return false;
      this.#extensions.set(operatorId, { batch: false, untilMs: this.#nowMs() + 60_000 });
      return false;
    }
    this.#extensions.set(operatorId, { batch, untilMs: this.#nowMs() + 600_000 });
    return batch;
  }

  hasPeer(operatorId: string): boolean {
    return this.registry.get(operatorId) !== undefined;
  }

  async send(operatorId: string, message: FederationMessage): Promise<PeerAnswer> {
    const started = performance.now();
    const entry = { event: "federation.message", from: this.operatorId, to: operatorId, method: message.method, path: message.path, msgId: message.msgId };
    const done = (status: number) => {
      const seconds = (performance.now() - started) / 1000;
      this.onCall?.({ peer: operatorId, route: federationRouteOf(message.path), status, seconds });
      return Math.round(seconds * 1e5) / 100;
    };
    try {
      const answer = await this.client.send(operatorId, message);
      const ms = done(answer.status);
      this.logger?.info({ ...entry, status: answer.status, ms }, "federation message");
      return answer;
    } catch (error) {
      const ms = done(0);
      this.logger?.info({ ...entry, status: 0, error: (error as { detail?: string }).detail ?? "failed", ms }, "federation message");
      throw error;
    }
  }

  /**
   * RFC 8693 subject token for a token exchange (HLF-SD-009): our signed assertion that the
   * secondary of `twinId` asks, audience the primary's operator, valid for one minute.
   */
  async subjectToken(input: { secondaryAddress: string; twinId: string; audienceOperatorId: string }): Promise<string> {
    const key = this.#keys[0]!;
    const iat = Math.floor(this.#nowMs() / 1000);
    // A JWT (RFC 7519) that the peer verifies with jose's jwtVerify against our published keys.
    return signCompact(
      { alg: key.alg, kid: key.kid, typ: "JWT" },
      {
        iss: `urn:twinning:operator:${this.operatorId}`,
        sub: input.secondaryAddress,
        aud: `urn:twinning:operator:${input.audienceOperatorId}`,
        iat,
        exp: iat + 60,
        twin_id: input.twinId,
      },
      key.key,
    );
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}

/** A federation path as a route template (no twin ids in metric labels). */
export function federationRouteOf(path: string): string {
  if (/^\/twins\/[^/]+\/status$/.test(path)) return "/twins/:twinId/status";
  if (/^\/twins\/[^/]+$/.test(path)) return "/twins/:twinId";
  return FEDERATION_ROUTES.has(path) ? path : "other";
}
const FEDERATION_ROUTES = new Set(["/activationCodes", "/activations", "/token", "/operator", "/batch"]);

/**
 * Our certificate must name our operator (peers check it against every message's iss) and match
 * our key: refused at start, not discovered at the first message every peer refuses.
 */
function assertOwnCertificate(tls: { cert: string; key: string }, operatorId: string, certFile: string): void {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(tls.cert);
  } catch {
    throw new Error(`the federation certificate file ${certFile} holds no PEM certificate`);
  }
  const named = operatorOfCertificate(certificate.raw);
  if (named !== operatorId) throw new Error(`the federation certificate ${certFile} names operator ${named ?? "(none)"}, not ${operatorId}`);
  let matches = false;
  try {
    matches = certificate.checkPrivateKey(createPrivateKey(tls.key));
  } catch {
    // an unreadable key matches nothing
  }
  if (!matches) throw new Error(`the federation key file does not hold the private key of ${certFile}`);
}

/** Reads a JSON file; a parse error names the file, never its content (it may hold a private key). */
function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    throw new Error(`cannot read the ${what} file ${file}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`the ${what} file ${file} is not valid JSON`);
  }
}

/** The federation of a context, or SVC3002 when the operator is not a reachable peer. */
export function requirePeer(federation: Federation | undefined, operatorId: string): Federation {
  if (!federation || !federation.hasPeer(operatorId)) {
    throw new TwinningError("peer_unreachable", { variables: [operatorId], detail: federation ? "not an allowed peer" : "federation not configured" });
  }
  return federation;
}
