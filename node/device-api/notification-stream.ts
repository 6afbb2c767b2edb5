import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import type { Context } from "hono";
import { notificationBody, type StoredNotification } from "../domain/notification.ts";
import type { TwinRole } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { AppEnv } from "../http/app-env.ts";
import type { NodeContext } from "../service/node-context.ts";

const HEARTBEAT_MS = 15_000;
/**
 * Unsent bytes a stream may hold for a client that does not read. Past it the stream is closed:
 * the events are committed, and the client resumes from Last-Event-ID without a gap.
 */
const MAX_UNSENT_BYTES = 1 << 20;
/** How long a stream closed for a client that does not read may take to hand over what it holds, before its socket is destroyed. */
const UNSENT_GRACE_MS = 30_000;
/** Replayed events read from the feed at a time: a resume reads page after page until it has all. */
const REPLAY_PAGE = 1_000;
/**
 * Live events a stream holds while its replay is written. A client that stops reading during a
 * long replay would otherwise have every later event kept for it, for as long as its token lives:
 * past this the stream is closed, and the client resumes from Last-Event-ID without a gap (so
 * does one still reading a replay long enough for a page of live events to come meanwhile).
 */
const MAX_HELD_LIVE_EVENTS = REPLAY_PAGE;

/** The head of an event stream (and of a HEAD of one). */
const STREAM_HEAD = { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" } as const;

/**
 * HLF-CM-005 device-based clients: an SSE stream of committed notifications. With
 * Last-Event-ID the stream first replays what was committed after it, with no gap: the live
 * listener is attached before the replay is read, and duplicates are skipped by id.
 *
 * Events are written to the Node response as the hub publishes them (in commit order, when the
 * request that committed them publishes, see NotificationHub): no stream pipeline and no turn of
 * the event loop between that and the event's bytes (the federation listener writes its answer
 * to the peer just before, see inbound-messages).
 */
export function streamNotifications(ctx: NodeContext, c: Context<AppEnv>, address: string, role: TwinRole): Response {
  if (ctx.hub.connections(address, role) >= ctx.config.limits.maxSseConnectionsPerSubscriber) {
    throw new TwinningError("policy_error", { variables: [`at most ${ctx.config.limits.maxSseConnectionsPerSubscriber} notification streams per subscriber`] });
  }
  // HEAD: the head a GET would get, and no stream (hono answers HEAD with the GET route's
  // Response, which must then be an ordinary one).
  if (c.req.method === "HEAD") return c.body(null, 200, { ...STREAM_HEAD, "x-request-id": c.get("requestId") });
  const res = c.env.outgoing;
  const lastEventIdHeader = c.req.header("last-event-id");
  const lastEventId = Number(lastEventIdHeader ?? "");
  const resume = lastEventIdHeader !== undefined && Number.isInteger(lastEventId) && lastEventId >= 0;

  res.writeHead(200, { ...STREAM_HEAD, "x-request-id": c.get("requestId") });
  // Until the replay is written, live events wait in order; after it, they are written at once.
  let replaying: StoredNotification[] | undefined = resume ? [] : undefined;
  // Live events are sent above it. An id beyond any given (made up, or from before a restore of
  // the database) would silence the stream: such a resume starts from the newest id instead.
  let sentId = resume ? lastEventId : 0;
  let open = true;
  // Called from the hub inside a commit's callback: whatever happens to this stream must not
  // reach the request that committed.
  const write = (text: string) => {
    if (!open) return;
    try {
      res.write(text);
      // res.write corks the socket until the next tick, and the hub calls this inside the
      // committing request's own work (a local toggle's answer is written after it): sent now,
      // the event leaves before that work instead of after it.
      res.uncork();
    } catch {
      return close();
    }
    if (res.writableLength > MAX_UNSENT_BYTES) close();
  };
  // The stream lives as long as the token it was opened with: until it expires (checked at each
  // write, by the node's clock) or its subscriber's tokens are revoked (the hub says so).
  // Its verification's end, for an external issuer's token (see Principal.verifiedUntilS): the
  // client opens it again, with the token verified afresh.
  const expiresAtMs = c.get("principal").verifiedUntilS * 1000;
  const expired = () => ctx.nowMs() >= expiresAtMs;
  const send = (n: StoredNotification) => {
    if (expired()) return close();
    if (n.id <= sentId) return;
    sentId = n.id;
    write(sseEvent(n));
  };
  const unsubscribe = ctx.hub.subscribe(address, role, (n) => {
    if (!replaying) return send(n);
    if (replaying.push(n) > MAX_HELD_LIVE_EVENTS) close();
  });
  const unwatch = ctx.hub.onRevoked(address, () => close());
  const heartbeat = setInterval(() => (expired() ? close() : write(": heartbeat\n\n")), HEARTBEAT_MS);
  heartbeat.unref();
  ctx.metrics.sseConnections.inc();
  const close = () => {
    if (!open) return;
    open = false;
    clearInterval(heartbeat);
    unsubscribe();
    unwatch();
    ctx.lifecycle.removeEventListener("abort", close);
    ctx.metrics.sseConnections.dec();
    res.end();
    // What is still queued (a client that stopped reading) goes to a client that reads again;
    // one that never does loses its socket.
    if (res.writableLength > 0 && !res.destroyed) {
      const deadline = setTimeout(() => res.destroy(), UNSENT_GRACE_MS);
      deadline.unref();
      res.once("close", () => clearTimeout(deadline));
    }
  };
  res.once("close", close);
  ctx.lifecycle.addEventListener("abort", close, { once: true });
  /** Resolves once what is queued has gone out (or the stream has closed): a replay page waits for it. */
  const drained = () =>
    res.writableNeedDrain && open
      ? new Promise<void>((resolve) => {
          const done = () => (res.off("drain", done), res.off("close", done), resolve());
          res.on("drain", done);
          res.on("close", done);
        })
      : Promise.resolve();
  // The client may have gone before this handler ran (then no "close" is to come), or the node be stopping.
  if (!res.socket || res.socket.destroyed || ctx.lifecycle.aborted) close();

  // `: connected` marks the end of the replay (the simulator's crash check reads up to it).
  if (!replaying) write(": connected\n\n");
  else {
    ctx.store
      .latestNotificationId()
      .then((latest) => {
        sentId = Math.min(sentId, latest);
        return replay(ctx, address, role, sentId, send, () => open, drained);
      })
      .catch((error: unknown) => {
        ctx.logger.error({ err: error }, "notification replay failed");
        close();
      })
      .finally(() => {
        write(": connected\n\n");
        const live = replaying ?? [];
        replaying = undefined;
        live.forEach(send);
      });
  }
  // @hono/node-server's marker for "the handler wrote the answer itself". It must be this very
  // object: a Response built while the server runs is node-server's own lighter class, whose
  // fast path writes a head regardless (the SSE tests fail if that ever changes).
  return RESPONSE_ALREADY_SENT;
}

/**
 * Everything committed after `afterId`, page by page, until a page comes back short (live events
 * wait meanwhile, so the stream has no gap however long the client was away).
 */
async function replay(
  ctx: NodeContext,
  address: string,
  role: TwinRole,
  afterId: number,
  send: (n: StoredNotification) => void,
  open: () => boolean,
  drained: () => Promise<void>,
): Promise<void> {
  let after = afterId;
  for (;;) {
    if (!open()) return;
    const page = await ctx.store.notificationsAfter(address, role, after, REPLAY_PAGE);
    page.forEach(send);
    if (page.length < REPLAY_PAGE) return;
    after = page[page.length - 1]!.id;
    // The next page once the client has taken this one (a long absence is replayed at the
    // client's pace, not queued whole, nor read in one turn of the event loop).
    await drained();
  }
}

function sseEvent(n: StoredNotification): string {
  // JSON text has no raw line breaks, so the data is one `data:` line.
  return `id: ${n.id}\nevent: ${n.type}\ndata: ${JSON.stringify(notificationBody(n))}\n\n`;
}
