import { limitBody } from "../http/body-limit.ts";
import { answerRecorder, routeTemplateOf } from "../http/request-envelope.ts";
import type { ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono, type Context } from "hono";
import { operatorOfCertificate } from "../../certs/federation-pki.ts";
import { FEDERATION_CONTENT_TYPE, verifyMessage, type FederationClaims } from "../../peers/message-codec.ts";
import { FEDERATION_BASE } from "../../peers/peer-client.ts";
import { errorBody, toTwinningError } from "../errors/error-response.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { NodeContext } from "../service/node-context.ts";
import type { Federation } from "./federation.ts";
import { registerInboundMessages } from "./inbound-messages.ts";

export interface FederationEnv {
  Bindings: { incoming: { socket: TLSSocket }; outgoing: ServerResponse };
  Variables: { peer: string; claims: FederationClaims | undefined; msgId: string; body: string | undefined };
}

export type FederationContext = Context<FederationEnv>;

/** What a message handler answers; the app signs it for the caller. */
export interface InboundAnswer {
  readonly status: 200 | 201 | 400 | 403 | 404 | 409 | 429;
  readonly body: unknown;
}

/** How a handler answers: a signed Response, or the signed text written at once (`sendNow`). */
export interface SignedAnswers {
  response(c: FederationContext, status: number, body: unknown): Promise<Response>;
  /** The signed answer text (the compact JWS) for `body`. */
  text(c: FederationContext, body: unknown): Promise<string>;
  /**
   * Writes a signed answer to the connection now, rather than when the handler's Response is
   * written (several turns of microtasks later), so what the handler does next comes after it.
   */
  sendNow(c: FederationContext, status: number, text: string): Response;
}

/** See SignedAnswers.sendNow; the head is the one @hono/node-server writes for a text Response. */
function sendNow(c: FederationContext, status: number, text: string): Response {
  c.env.outgoing.writeHead(status, { "content-type": FEDERATION_CONTENT_TYPE, "content-length": Buffer.byteLength(text) });
  c.env.outgoing.end(text);
  return RESPONSE_ALREADY_SENT;
}

/**
 * The federation listener's app (DESIGN "Federation API"): the client certificate must chain
 * to the federation CA and name a known operator, which must be the JWS `iss`; `aud`, `htm`,
 * `htu`, lifetime, skew and `jti` replay are checked; every rejection has a clear error body
 * and a log line. Answers are signed the same way.
 */
export function createFederationApp(ctx: NodeContext, federation: Federation): Hono<FederationEnv> {
  const app = new Hono<FederationEnv>();
  const options = federation.options;

  const text = (c: FederationContext, body: unknown): Promise<string> =>
    federation.signer.sign({ aud: c.get("peer"), htm: c.req.method, htu: `${federation.publicUrl}${c.req.path}`, msgId: c.get("msgId"), body });
  const sign = async (c: FederationContext, status: number, body: unknown): Promise<Response> =>
    new Response(await text(c, body), { status, headers: { "content-type": FEDERATION_CONTENT_TYPE } });

  // Every answer counted and timed by route template, as the device listener's are, and logged
  // at info with the message's msgId as its request id (the sender logs the same msgId).
  const record = answerRecorder(ctx);
  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    const route = routeTemplateOf(c);
    // An answer written at once (sendNow) is already on the connection.
    const out = c.env.outgoing;
    const status = out.headersSent ? out.statusCode : c.res.status;
    record({ requestId: c.get("msgId") ?? "", method: c.req.method, route, status, seconds: (performance.now() - started) / 1000 });
  });
  app.use("*", limitBody(options.maxBodyBytes));
  app.use(`${FEDERATION_BASE}/*`, async (c, next) => {
    const operator = certifiedOperator(c.env.incoming.socket);
    if (!federation.hasPeer(operator)) throw new TwinningError("peer_not_allowed", { variables: [`operator ${operator} is not a known peer`] });
    c.set("peer", operator);
    c.set("msgId", (c.req.header("x-twinning-msgid") ?? "").slice(0, 100));
    if (c.req.method === "GET") {
      c.set("claims", undefined);
      return next();
    }
    const body = await c.req.text();
    c.set("body", body);
    const claims = await verifyMessage(body, {
      issuer: operator,
      audience: ctx.config.operatorId,
      htm: c.req.method,
      htu: `${federation.publicUrl}${c.req.path}`,
      getKey: (header) => federation.registry.get(operator)!.keys(header as never, undefined as never),
      nowMs: ctx.nowMs(),
      maxSkewSeconds: options.maxClockSkewSeconds,
      maxLifetimeSeconds: options.maxMessageLifetimeSeconds,
    });
    c.set("msgId", claims.msgId);
    // Whole milliseconds: a NumericDate may have a fraction (RFC 7519 §2).
    if (!(await ctx.store.rememberJti(`${operator}:${claims.jti}`, Math.ceil((claims.exp + options.maxClockSkewSeconds + 1) * 1000), ctx.nowMs()))) {
      throw new TwinningError("federation_rejected", { variables: ["replayed jti"] });
    }
    c.set("claims", claims);
    return next();
  });

  registerInboundMessages(app, ctx, federation, { response: sign, text, sendNow });

  app.get(`${FEDERATION_BASE}/jwks.json`, (c) => c.json(federation.jwks()));
  const refusal = async (c: FederationContext, e: TwinningError): Promise<Response> => {
    // Once the caller is known (by its certificate), the error is signed too, for the msgId its
    // message named even when the message itself was refused; before that, plain JSON.
    if (c.get("peer") && !c.get("msgId")) c.set("msgId", unverifiedMsgId(c.get("body")));
    const answer = c.get("peer") ? await sign(c, e.status, errorBody(e)) : new Response(JSON.stringify(errorBody(e)), { status: e.status, headers: { "content-type": "application/json" } });
    if (e.retryAfterSeconds !== undefined) answer.headers.set("retry-after", String(e.retryAfterSeconds));
    return answer;
  };
  app.notFound((c) => refusal(c, new TwinningError("not_found", { variables: ["path"] })));
  app.onError(async (error, c) => {
    const e = toTwinningError(error);
    // A known peer's refused message is worth a warning; anyone else who reaches the port (no
    // certificate, another CA) gets an info line, its path cut short: it cannot flood the warnings.
    const line = { peer: c.get("peer"), code: e.code, messageId: e.messageId, reason: e.detail ?? e.variables[0], path: c.req.path.slice(0, 200) };
    if (c.get("peer")) ctx.logger.warn(line, "federation message rejected");
    else ctx.logger.info(line, "federation message rejected");
    return refusal(c, e);
  });
  return app;
}

/**
 * The msgId a refused message's payload names, read without verifying it: only to label the
 * signed refusal for the caller (who matches answers to its messages by msgId); "" when none.
 */
export function unverifiedMsgId(jws: string | undefined): string {
  const payload = jws?.split(".")[1];
  if (!payload) return "";
  try {
    const msgId = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { msgId?: unknown } | null)?.msgId;
    return typeof msgId === "string" && msgId.length <= 100 ? msgId : "";
  } catch {
    return "";
  }
}

/** The operator each connection's client certificate names, read once per TLS 1.3 connection (whose peer never changes). */
const operatorOfConnection = new WeakMap<TLSSocket, string>();

/** The operator the connection's client certificate names, or a rejection saying why none. */
function certifiedOperator(socket: TLSSocket): string {
  const known = operatorOfConnection.get(socket);
  if (known !== undefined) return known;
  // Node reports a resumed TLS 1.3 session as authorized even when the first handshake
  // carried no certificate: the certificate itself must be there too.
  // getPeerX509Certificate parses on demand: a quarter of getPeerCertificate's cost, which
  // builds every field of the certificate as an object on each call.
  const certificate = socket.authorized ? socket.getPeerX509Certificate() : undefined;
  if (!certificate) {
    throw new TwinningError("federation_rejected", { variables: ["client certificate not issued by the federation CA"], detail: String(socket.authorizationError ?? "no certificate") });
  }
  const operator = operatorOfCertificate(certificate.raw);
  if (!operator) throw new TwinningError("federation_rejected", { variables: ["client certificate names no operator"] });
  // TLS 1.2 may renegotiate, with another certificate: only a 1.3 connection's answer is kept.
  if (socket.getProtocol() === "TLSv1.3") operatorOfConnection.set(socket, operator);
  return operator;
}
