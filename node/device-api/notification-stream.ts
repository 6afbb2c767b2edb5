import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { notificationBody, type StoredNotification } from "../domain/notification.ts";
import type { TwinRole } from "../domain/twin.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { AppEnv } from "../http/app-env.ts";
import type { NodeContext } from "../service/node-context.ts";

const HEARTBEAT_MS = 15_000;

/**
 * HLF-CM-005 device-based clients: an SSE stream of committed notifications. With
 * Last-Event-ID the stream first replays what was committed after it, with no gap: the live
 * listener is attached before the replay is read, and duplicates are skipped by id.
 */
export function streamNotifications(ctx: NodeContext, c: Context<AppEnv>, address: string, role: TwinRole): Response {
  if (ctx.hub.connections(address, role) >= ctx.config.limits.maxSseConnectionsPerSubscriber) {
    throw new TwinningError("policy_error", { variables: [`at most ${ctx.config.limits.maxSseConnectionsPerSubscriber} notification streams per subscriber`] });
  }
  const lastEventId = Number(c.req.header("last-event-id") ?? "");
  const queue: StoredNotification[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = ctx.hub.subscribe(address, role, (n) => {
    queue.push(n);
    wake?.();
  });
  ctx.metrics.sseConnections.inc();
  return streamSSE(c, async (stream) => {
    let open = true;
    const close = () => {
      open = false;
      wake?.();
    };
    stream.onAbort(close);
    ctx.lifecycle.addEventListener("abort", close, { once: true });
    try {
      let sentId = 0;
      const send = async (n: StoredNotification) => {
        if (n.id <= sentId) return;
        sentId = n.id;
        await stream.writeSSE({ id: String(n.id), event: n.type, data: JSON.stringify(notificationBody(n)) });
      };
      if (Number.isInteger(lastEventId) && lastEventId >= 0 && c.req.header("last-event-id") !== undefined) {
        sentId = lastEventId;
        for (const n of await ctx.store.notificationsAfter(address, role, lastEventId, 1_000)) await send(n);
      }
      await stream.write(": connected\n\n");
      while (open && !ctx.lifecycle.aborted) {
        while (queue.length > 0) await send(queue.shift()!);
        const timedOut = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), HEARTBEAT_MS);
          wake = () => {
            clearTimeout(timer);
            resolve(false);
          };
        });
        wake = undefined;
        if (timedOut && open) await stream.write(": heartbeat\n\n");
      }
    } finally {
      unsubscribe();
      ctx.lifecycle.removeEventListener("abort", close);
      ctx.metrics.sseConnections.dec();
    }
  });
}
