import { Agent } from "undici";
import { TwinningError } from "../node/errors/twinning-error.ts";
import { FEDERATION_CONTENT_TYPE, verifyMessage, type MessageSigner } from "./message-codec.ts";
import type { PeerRegistry } from "./peer-registry.ts";
import { boundedCall } from "./bounded-call.ts";

export const FEDERATION_BASE = "/federation/v1";

/** A peer's answer is read up to this many bytes (a batch's results are ~20 KiB). */
export const MAX_PEER_ANSWER_BYTES = 1_048_576;
/** How long an idle connection to a peer is kept for the next message (the peer's listener keeps it longer). */
export const PEER_KEEP_ALIVE_MS = 60_000;

const TRANSPORT = "transport: ";
/** Whether a failed call got no answer at all (no connection, a timeout), as against an answer we could not accept. */
export const noAnswer = (error: unknown): boolean => error instanceof TwinningError && (error.detail?.startsWith(TRANSPORT) ?? false);

/** A peer's answer that took the request: any 2xx (DESIGN names no status for its answers). */
export const answeredOk = (status: number): boolean => status >= 200 && status < 300;
/** A peer's signed refusal of the request itself (4xx): it committed nothing. */
export const refused = (status: number): boolean => status >= 400 && status < 500;

export interface PeerAnswer {
  readonly status: number;
  readonly body: any;
}

export interface PeerClientOptions {
  readonly operatorId: string;
  readonly registry: PeerRegistry;
  readonly signer: MessageSigner;
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string };
  readonly nowMs: () => number;
  /** Deadline of one signed call (connect + answer). */
  readonly timeoutMs: number;
  readonly maxSkewSeconds: number;
  readonly maxLifetimeSeconds: number;
  /** Called for every new TLS connection to a peer. */
  readonly onConnect?: (operatorId: string) => void;
}

/**
 * Signed calls to peer operators over mutual TLS. One keep-alive undici Agent per peer, so a
 * warm connection carries every message without a new TLS handshake (`handshakes` counts them).
 * Transport failures and unsigned answers become SVC3002; the peer's signed answer, whatever
 * its status, is returned for the caller to interpret.
 */
export class PeerClient {
  readonly #o: PeerClientOptions;
  readonly #agents = new Map<string, Agent>();
  /** New TLS connections opened to peers since start. */
  handshakes = 0;

  constructor(options: PeerClientOptions) {
    this.#o = options;
  }

  /** The keep-alive mutual-TLS connections to one peer (also for its JWKS on its federation origin). */
  agentFor(operatorId: string): Agent {
    let agent = this.#agents.get(operatorId);
    if (!agent) {
      agent = new Agent({
        connect: { ca: this.#o.tls.ca, cert: this.#o.tls.cert, key: this.#o.tls.key, rejectUnauthorized: true },
        keepAliveTimeout: PEER_KEEP_ALIVE_MS,
        keepAliveMaxTimeout: 600_000,
        connections: 16,
      });
      agent.on("connect", () => {
        this.handshakes += 1;
        this.#o.onConnect?.(operatorId);
      });
      this.#agents.set(operatorId, agent);
    }
    return agent;
  }

  async send(operatorId: string, message: { method: "GET" | "POST" | "PUT" | "DELETE"; path: string; msgId: string; body?: unknown }): Promise<PeerAnswer> {
    const peer = this.#o.registry.get(operatorId);
    if (!peer) throw new TwinningError("peer_unreachable", { variables: [operatorId], detail: "not in the peer registry" });
    const htu = `${peer.federationUrl}${FEDERATION_BASE}${message.path}`;
    const deadline = performance.now() + this.#o.timeoutMs;
    const signed =
      message.method === "GET" ? undefined : await this.#o.signer.sign({ aud: operatorId, htm: message.method, htu, msgId: message.msgId, body: message.body ?? {} });
    const { status, headers, text } = await boundedCall(this.agentFor(operatorId), {
      url: htu,
      method: message.method,
      headers: { "content-type": FEDERATION_CONTENT_TYPE, "x-twinning-msgid": message.msgId },
      ...(signed ? { body: signed } : {}),
      timeoutMs: this.#o.timeoutMs,
      maxBytes: MAX_PEER_ANSWER_BYTES,
      tooLarge: () => new Error(`answer over ${MAX_PEER_ANSWER_BYTES} bytes`),
    }).catch((error: unknown) => {
      throw new TwinningError("peer_unreachable", { variables: [operatorId], detail: `${TRANSPORT}${(error as Error).message}`, cause: error });
    });
    if (!String(headers["content-type"] ?? "").startsWith(FEDERATION_CONTENT_TYPE)) {
      throw new TwinningError("peer_unreachable", { variables: [operatorId], detail: `unsigned answer ${status}: ${text.slice(0, 160)}` });
    }
    const claims = await verifyMessage(text, {
      issuer: operatorId,
      audience: this.#o.operatorId,
      htm: message.method,
      htu,
      // A GET carries no JWS, so a peer that follows DESIGN cannot know our msgId (only our
      // X-Twinning-MsgId header names it): its answer is bound by htm, htu and aud alone.
      ...(message.method === "GET" ? {} : { msgId: message.msgId }),
      onThreadPool: true,
      // Keys fetched from the peer's JWKS URL (a new kid, the first message) must come within the
      // call's own deadline: the device waiting on a synchronous call was promised one.
      getKey: (header) => (peer.remote ? withinDeadline(Promise.resolve(peer.keys(header as never, undefined as never)), deadline) : peer.keys(header as never, undefined as never)),
      nowMs: this.#o.nowMs(),
      maxSkewSeconds: this.#o.maxSkewSeconds,
      maxLifetimeSeconds: this.#o.maxLifetimeSeconds,
    }).catch((error: unknown) => {
      throw new TwinningError("peer_unreachable", { variables: [operatorId], detail: `answer rejected: ${(error as TwinningError).detail ?? "invalid"}`, cause: error });
    });
    return { status, body: claims.body };
  }

  async close(): Promise<void> {
    await Promise.all([...this.#agents.values()].map((a) => a.close().catch(() => undefined)));
    this.#agents.clear();
  }

  /** Cuts every connection to peers now, failing the calls under way (the node's stop, past its grace). */
  async destroy(): Promise<void> {
    await Promise.all([...this.#agents.values()].map((a) => a.destroy().catch(() => undefined)));
  }
}

/** The promise, or a failure once `deadline` (performance.now() time) has passed. */
function withinDeadline<T>(promise: Promise<T>, deadline: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the peer's signing keys did not come within the call's deadline")), Math.max(0, deadline - performance.now()));
    timer.unref();
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A peer's OMA error answer becomes our error (same messageId), so devices see the real cause. */
export function peerErrorToTwinningError(operatorId: string, answer: PeerAnswer): TwinningError {
  const e = answer.body?.requestError;
  const ex = e?.serviceException ?? e?.policyException;
  const id: string | undefined = ex?.messageId;
  const map: Record<string, ConstructorParameters<typeof TwinningError>[0]> = {
    SVC3001: "invalid_code",
    POL1037: "role_mixture",
    POL3001: "secondary_already_twinned",
    POL3003: "too_many_twins",
    POL3004: "too_many_attempts",
    POL1038: "update_not_allowed",
    SVC0002: "invalid_input",
  };
  const code = id ? map[id] : undefined;
  if (code && answer.status < 500) {
    // A peer's words, bounded before they reach our device's error text.
    const variables = Array.isArray(ex?.variables) ? (ex.variables as unknown[]).slice(0, 4).map((v) => String(v).slice(0, 100)) : [];
    const retry = code === "too_many_attempts" ? Number(variables[0]) || 60 : undefined;
    return new TwinningError(code, { variables, detail: `from peer ${operatorId}`, ...(retry ? { retryAfterSeconds: retry } : {}) });
  }
  return new TwinningError("peer_unreachable", { variables: [operatorId], detail: `peer answered ${answer.status} ${id ?? ""}` });
}
