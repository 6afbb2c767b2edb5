import { PEER_KEEP_ALIVE_MS } from "../../peers/peer-client.ts";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type RequestListener, type ServerOptions } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { getRequestListener, RequestError, serve, type ServerType } from "@hono/node-server";
import type pino from "pino";
import type { NodeConfig } from "../config/node-config.ts";
import { CodeHasher } from "../domain/activation-code.ts";
import { createDeviceApp } from "../http/create-app.ts";
import { answeringReady, ReadyAnswers } from "../http/ready-answers.ts";
import { answerRecorder, refusalRecorder, requestIdOf } from "../http/request-envelope.ts";
import { answeringDirect, DirectRoutes } from "../http/direct-answers.ts";
import { clientErrorOf, errorAnswer, errorResponse, rawErrorResponse, toTwinningError } from "../errors/error-response.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { Socket } from "node:net";
import { callbackDispatcher, createCallbackSender } from "../notifications/callback-sender.ts";
import { NotificationHub } from "../notifications/notification-hub.ts";
import { OutboxWorker } from "../notifications/outbox-worker.ts";
import { createLogger } from "../observability/logger.ts";
import { NodeMetrics } from "../observability/metrics.ts";
import type { NodeContext } from "../service/node-context.ts";
import { ReplaySealer } from "../service/replay-sealer.ts";
import { SqliteStore } from "../store/sqlite/sqlite-store.ts";
import type { TwinningStore } from "../store/store-port.ts";
import { AccessTokens } from "../tokens/access-tokens.ts";
import { loadOrCreateSecrets } from "./node-secrets.ts";
import { inRequestOrder } from "../http/request-order.ts";
import { Federation } from "../federation/federation.ts";
import { createFederationApp } from "../federation/federation-app.ts";
import { createPeerBatchSender } from "../federation/peer-delivery.ts";
import { provisioningStamp } from "../tokens/credentials.ts";
import { KeyedLock } from "../service/keyed-lock.ts";
import { PACKAGE_VERSION } from "../observability/build-info.ts";

export interface StartNodeOptions {
  /** Injected clock; defaults to Date.now. */
  readonly nowMs?: () => number;
  /** Where logs go (default stdout). */
  readonly logDestination?: pino.DestinationStream;
  /** A store to use instead of the SQLite file (e.g. another implementation of the port). */
  readonly store?: TwinningStore;
  /** Process-wide default metrics (event loop, memory); off when several nodes share a process. */
  readonly defaultMetrics?: boolean;
}

export interface RunningNode {
  readonly operatorId: string;
  /** Base URL of the device listener (`/twinning/v1`, `/oauth`, `/admin/v1`). */
  readonly deviceUrl: string;
  readonly adminToken: string;
  readonly adminTokenCreated: boolean;
  readonly databaseFile: string;
  /** Base URL of the federation listener (mutual TLS), when federation is configured. */
  readonly federationUrl: string | undefined;
  readonly context: NodeContext;
  /** Re-reads the peer list and our signing keys (SIGHUP, POST /admin/v1/peers/reload). */
  reloadFederation(): Promise<{ peers: number; keys: number }>;
  /** Graceful stop: streams end, in-flight requests finish, the outbox keeps its state. */
  stop(): Promise<void>;
}

/**
 * @hono/node-server's listener for an app (used instead of the one `serve` builds), with the
 * OMA body on a request it cannot turn into a WHATWG Request at all (a malformed Host header or
 * request target), which it would answer with a bare 400: SVC0002 naming the request.
 */
function listenerFor(fetch: (request: Request) => Response | Promise<Response>, hostname: string): RequestListener {
  return getRequestListener(fetch, {
    hostname,
    errorHandler: (error) =>
      errorResponse(error instanceof RequestError ? new TwinningError("invalid_input", { variables: ["request"], detail: error.message }) : toTwinningError(error)),
  });
}

/**
 * HTTP/1.1 requires a Host header (RFC 9112 §3.2). Node checks it itself with a bare 400 (no
 * body) unless `requireHostHeader` is off, as it is on our listeners: checked here instead, with
 * the OMA body, before anything else sees the request.
 */
function requiringHost(listener: RequestListener, refused: Refused): RequestListener {
  return (req, res) => {
    if (req.headers.host !== undefined || req.httpVersion !== "1.1") return listener(req, res);
    const { status, headers, body } = errorAnswer(new TwinningError("invalid_input", { variables: ["Host"] }));
    refused(status, "no Host header", req.socket.remoteAddress);
    res.writeHead(status, { ...headers, "content-length": Buffer.byteLength(body), connection: "close" }).end(body);
  };
}

/** Requests Node refuses before the app (431, 408, 400) still get the OMA error body. */
function answerClientErrors(server: ServerType, refused: Refused): void {
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    // As Node's own handler: answer unless a response on this connection has begun (a keep-alive
    // connection that served earlier requests still gets its 431, 408 or 400).
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (!socket.writable || inFlight?.headersSent) return void socket.destroy();
    refused(clientErrorOf(error.code)[0], error.code ?? "unparsable request", socket.remoteAddress);
    socket.end(rawErrorResponse(error.code));
  });
}

/** What a request answered before routing is recorded with: its status, why (Node's error code, or no Host) and the peer's address. */
type Refused = (status: number, reason: string, remote: string | undefined) => void;

/** A request answered before routing (Node's parser, no Host) is counted under one route, no method: it has none we could trust. */
const REFUSED_ROUTE = "(refused before routing)";

/**
 * Starts a node. A start that fails part way (a port taken, a bad key file) undoes what it had
 * opened (listeners, the database and its lock, connections) before the error is thrown, so the
 * same process can start one again.
 */
export async function startNode(config: NodeConfig, options: StartNodeOptions = {}): Promise<RunningNode> {
  const undo: (() => unknown)[] = [];
  try {
    return await start(config, options, undo);
  } catch (error) {
    for (const step of undo.reverse()) await Promise.resolve().then(step).catch(() => undefined);
    throw error;
  }
}

/** How long the federation listener keeps an idle peer connection: longer than a PeerClient keeps one. */
const FEDERATION_KEEP_ALIVE_MS = PEER_KEEP_ALIVE_MS + 5_000;

const closeServer = (server: ServerType) => new Promise<void>((done) => server.close(() => done()));

async function start(config: NodeConfig, options: StartNodeOptions, undo: (() => unknown)[]): Promise<RunningNode> {
  const nowMs = options.nowMs ?? Date.now;
  const dataDir = resolve(config.dataDir);
  const databaseFile = config.databaseFile ?? join(dataDir, `node-${config.operatorId}.sqlite`);
  const secrets = await loadOrCreateSecrets(dataDir, config.adminToken);
  const logger = createLogger({ level: config.logLevel, operatorId: config.operatorId, ...(options.logDestination ? { destination: options.logDestination } : {}) });
  for (const file of secrets.readableByOthers) logger.warn({ file }, "a secret file is readable by others than the node's user: chmod 600 it");
  const store =
    options.store ??
    new SqliteStore({
      file: databaseFile,
      nowMs: nowMs(),
      exclusiveLock: config.databaseExclusiveLock,
      synchronous: config.databaseSynchronous,
      onUpkeepError: (error) => logger.warn({ err: error }, "store background work failed (the notification feed or a listener of committed notifications)"),
      minFreeDiskBytes: config.limits.minFreeDiskBytes,
    });
  if (!options.store) undo.push(() => store.close());
  const metrics = new NodeMetrics({ defaultMetrics: options.defaultMetrics ?? false, outboxStats: () => store.outboxStats(), version: PACKAGE_VERSION });
  // Counted under one route, and logged (at info, as every request is) with what little can be
  // trusted of it: no path or method, which the parser may not even have read.
  const refusedBeforeRouting = (listener: "device" | "federation") => (status: number, reason: string, remote: string | undefined) => {
    metrics.requests.inc({ method: "-", route: REFUSED_ROUTE, status: String(status) });
    logger.info({ listener, status, reason, remote }, "request refused before routing");
  };
  const hub = new NotificationHub();
  const unfeed = store.onNotificationsCommitted((notifications) => hub.committed(notifications));
  undo.push(() => (unfeed(), hub.close()));
  const [draining, lifecycle] = [new AbortController(), new AbortController()];
  const dispatcher = callbackDispatcher({ allowPrivateTargets: config.limits.allowPrivateCallbackTargets });
  undo.push(() => dispatcher.close());
  let baseUrl = config.device.publicUrl?.replace(/\/$/, "") ?? "";
  const federation = config.federation
    ? await Federation.create({
        operatorId: config.operatorId,
        options: config.federation,
        allowedPeers: config.policy.allowedPeerOperators,
        nowMs,
        onConnect: () => metrics.tlsHandshakes.inc(),
      })
    : undefined;
  if (federation) {
    federation.logger = logger;
    federation.onCall = ({ peer, route, status, seconds }) => {
      metrics.peerCalls.inc({ peer, route, status: String(status) });
      metrics.peerCallLatency.observe({ peer, route }, seconds);
    };
    undo.push(() => federation.close());
  }
  const sendCallback = createCallbackSender({ dispatcher, timeoutMs: config.limits.callbackTimeoutMs, allowPrivateTargets: config.limits.allowPrivateCallbackTargets });

  const outbox = new OutboxWorker({
    store,
    // Callbacks one by one; peer lanes in batches (one message per request to peers without the extension).
    deliver: sendCallback,
    // A 404 to a status message waits out the peer's activation commit (twice its call
    // timeout; twice ours again, as the peer's may be longer).
    ...(federation ? { deliverBatch: createPeerBatchSender(federation, { nowMs, unknownTwinGraceMs: 4 * config.federation!.callTimeoutMs }) } : {}),
    policy: { ...config.delivery, maxAgeMs: config.delivery.maxAgeSeconds * 1000 },
    concurrency: config.delivery.concurrency,
    nowMs,
    logger,
    onDelivered: (e) => metrics.deliveries.inc({ kind: e.kind, result: "delivered" }),
    onFailed: (e, dead) => metrics.deliveries.inc({ kind: e.kind, result: dead ? "dead" : "retry" }),
  });

  const answers =
    config.limits.readyAnswerBytes > 0 && store.readVersion() !== undefined
      ? new ReadyAnswers({ version: () => store.readVersion(), nowMs, maxBytes: config.limits.readyAnswerBytes })
      : undefined;

  const context: NodeContext = {
    config,
    store,
    tokens: new AccessTokens({
      issuer: `urn:twinning:operator:${config.operatorId}`,
      privateKey: secrets.signingKey.privateKey,
      publicJwks: [secrets.signingKey.publicJwk],
      kid: secrets.signingKey.kid,
      external: config.externalIssuer,
      nowMs,
      provisioningOf: async (subject) => {
        const subscriber = await store.getSubscriber(subject);
        return subscriber && provisioningStamp(subscriber);
      },
    }),
    codes: new CodeHasher(secrets.codeSecret),
    sealer: new ReplaySealer(secrets.codeSecret),
    hub,
    metrics,
    logger,
    adminToken: secrets.adminToken,
    federation,
    wakeOutbox: () => outbox.wake(),
    correlated: new KeyedLock(),
    answers,
    nowMs,
    deviceBaseUrl: () => baseUrl,
    jwks: () => ({ keys: [secrets.signingKey.publicJwk] }),
    draining: draining.signal,
    lifecycle: lifecycle.signal,
    committed: (notifications, queued, laneHeads) => {
      // Peer messages first: their delivery is under way before the streams are written to.
      if (queued) outbox.wake(laneHeads);
      hub.publish(notifications);
    },
  };

  // Both listeners: header size and request time bounded (Node checks timeouts on an interval,
  // so the interval follows the timeout).
  const requestBounds = {
    maxHeaderSize: config.limits.maxHeaderBytes,
    requestTimeout: config.limits.requestTimeoutMs,
    headersTimeout: Math.min(config.limits.requestTimeoutMs, 60_000),
    connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(config.limits.requestTimeoutMs / 4))),
    // Checked by requiringHost, with the OMA body.
    requireHostHeader: false,
  };
  const direct = new DirectRoutes();
  const app = createDeviceApp(context, direct);
  const tls = config.device.tlsCertFile !== undefined && config.device.tlsKeyFile !== undefined
    ? { cert: readFileSync(config.device.tlsCertFile), key: readFileSync(config.device.tlsKeyFile) }
    : undefined;
  // Repeated reads with a ready answer are sent before the app (ReadyAnswers).
  const createDeviceServer = (options: ServerOptions) => {
    const record = answerRecorder(context);
    const appListener = answeringDirect(
      direct,
      { ctx: context, maxBodyBytes: config.limits.maxBodyBytes, requestIdOf, record, refusal: refusalRecorder(context) },
      listenerFor(app.fetch, config.device.host),
    );
    const listener = inRequestOrder(requiringHost(answers ? answeringReady(answers, requestIdOf, record, appListener) : appListener, refusedBeforeRouting("device")));
    return tls ? createHttpsServer(options, listener) : createHttpServer(options, listener);
  };
  const server: ServerType = await new Promise((resolveListening, reject) => {
    const s = serve(
      {
        fetch: app.fetch,
        hostname: config.device.host,
        port: config.device.port,
        serverOptions: { ...requestBounds, ...(tls ?? {}) },
        createServer: createDeviceServer as typeof createHttpServer,
      },
      () => resolveListening(s),
    );
    s.once("error", reject);
  });
  undo.push(() => closeServer(server));
  answerClientErrors(server, refusedBeforeRouting("device"));
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  if (!baseUrl) baseUrl = `${tls ? "https" : "http"}://${host}:${address.port}`;

  let federationServer: ServerType | undefined;
  if (federation && config.federation) {
    const f = config.federation;
    const fedApp = createFederationApp(context, federation);
    federationServer = await new Promise<ServerType>((resolveListening, reject) => {
      const s = serve(
        {
          fetch: fedApp.fetch,
          hostname: f.host,
          port: f.port,
          createServer: ((options: object) => createHttpsServer(options, requiringHost(listenerFor(fedApp.fetch, f.host), refusedBeforeRouting("federation")))) as typeof createHttpsServer,
          // requestCert without rejectUnauthorized: a foreign certificate gets a clear error body instead of a bare TLS failure.
          serverOptions: {
            cert: federation.tls.cert,
            key: federation.tls.key,
            ca: federation.tls.ca,
            requestCert: true,
            rejectUnauthorized: false,
            ...requestBounds,
          },
        },
        () => resolveListening(s),
      );
      s.once("error", reject);
    });
    answerClientErrors(federationServer, refusedBeforeRouting("federation"));
    federationServer.on("secureConnection", () => metrics.inboundTlsHandshakes.inc());
    // Peers keep an idle connection PEER_KEEP_ALIVE_MS; held a little longer here, so the client
    // is the one that closes it and a message every few seconds pays no new handshake (Node's
    // default would close it after 5 s).
    (federationServer as { keepAliveTimeout: number }).keepAliveTimeout = FEDERATION_KEEP_ALIVE_MS;
    const fedAddress = federationServer.address() as AddressInfo;
    federation.publicUrl = f.publicUrl?.replace(/\/$/, "") ?? `https://${fedAddress.family === "IPv6" ? `[${fedAddress.address}]` : fedAddress.address}:${fedAddress.port}`;
  }

  outbox.start();
  const pruneTimer = setInterval(() => {
    store
      .prune({
        nowMs: nowMs(),
        notificationRetentionMs: config.limits.notificationRetentionSeconds * 1000,
        // Failures are kept while a code they count against can still be redeemed (per-code limit).
        attemptWindowMs: Math.max(config.policy.failedAttemptWindowSeconds, config.policy.codeTtlSeconds) * 1000,
        deadLetterRetentionMs: config.delivery.deadLetterRetentionSeconds * 1000,
      })
      .catch((error: unknown) => logger.warn({ err: error }, "prune failed"));
  }, 60_000);
  pruneTimer.unref();
  if (config.externalIssuer && !config.externalIssuer.audience) {
    // RFC 9068 §4: without it, any token of that issuer with the twinning scope is taken, whatever it was issued for.
    logger.warn({ issuer: config.externalIssuer.issuer }, "externalIssuer.audience is not set: the issuer's tokens are accepted whatever their audience");
  }
  logger.info({ deviceUrl: baseUrl, federationUrl: federation?.publicUrl, version: PACKAGE_VERSION }, "node started");

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // Not ready from now on; still serving while a load balancer takes the node out.
      draining.abort();
      if (config.limits.shutdownDrainMs > 0) await new Promise((resolve) => setTimeout(resolve, config.limits.shutdownDrainMs));
      lifecycle.abort();
      clearInterval(pruneTimer);
      const closed = Promise.all(
        [server, federationServer].filter((x): x is ServerType => x !== undefined).map((x) => new Promise<void>((done) => x.close(() => done()))),
      );
      type Closable = { closeAllConnections?: () => void; closeIdleConnections?: () => void };
      const servers = [server, federationServer].filter(Boolean) as unknown as Closable[];
      // One deadline for the whole stop: past the grace, requests still open are cut, and so are
      // the deliveries still under way (they stay queued, and go at the next start: a peer applies
      // each msgId once, and a callback carries the same delivery id).
      const grace = setTimeout(() => {
        servers.forEach((x) => x.closeAllConnections?.());
        void dispatcher.destroy().catch(() => undefined);
        void federation?.client.destroy();
      }, config.limits.shutdownGraceMs);
      servers.forEach((x) => x.closeIdleConnections?.());
      await closed;
      await outbox.stop();
      clearTimeout(grace);
      await dispatcher.close().catch(() => undefined);
      await federation?.close();
      // A last group that failed to commit was answered as failed to each of its requests; the
      // store is closed all the same, and the stop goes on.
      await store.close().catch((error: unknown) => logger.error({ err: error }, "the last writes failed as the store closed"));
      unfeed();
      hub.close();
      logger.info("node stopped");
    })());

  return {
    operatorId: config.operatorId,
    deviceUrl: baseUrl,
    federationUrl: federation?.publicUrl,
    adminToken: secrets.adminToken,
    adminTokenCreated: secrets.adminTokenCreated,
    databaseFile,
    context,
    reloadFederation: async () => (federation ? federation.reload() : { peers: 0, keys: 0 }),
    stop,
  };
}
