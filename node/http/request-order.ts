import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** Methods that change nothing (RFC 9110 §9.2.1): pipelined, they may be handled side by side. */
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** What a connection has asked for and not yet been answered. */
interface Line {
  /** Settles once every request asked so far on the connection has been answered. */
  answered: Promise<void>;
  /** How many of those change something (counted until all of them are answered: a request may wait longer than it must, never less). */
  changes: number;
}

/**
 * Requests pipelined on one connection take effect in the order they were sent (RFC 9112 §9.3.2:
 * only safe requests may be handled in parallel). Node hands a pipelined request to the listener
 * as soon as it has parsed it, while a change before it may not have committed yet (the group
 * commit's next turn): `PUT status Off` then `GET twinning` in one write read the status from
 * before the PUT. So a request that follows an unanswered change, and a change that follows any
 * unanswered request, waits until everything before it on its connection has been answered; safe
 * requests after safe ones still run at once. A request alone on its connection (the usual case)
 * pays a map lookup and two listeners.
 */
export function inRequestOrder(listener: RequestListener): RequestListener {
  const lines = new WeakMap<Socket, Line>();
  return (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const before = lines.get(socket);
    const change = !SAFE.has(req.method ?? "");
    const mine = new Promise<void>((resolve) => {
      res.once("finish", resolve);
      res.once("close", resolve);
    });
    const line: Line = { answered: before ? Promise.all([before.answered, mine]).then(() => undefined) : mine, changes: (before?.changes ?? 0) + (change ? 1 : 0) };
    lines.set(socket, line);
    void line.answered.then(() => {
      if (lines.get(socket) === line) lines.delete(socket);
    });
    if (before === undefined || (!change && before.changes === 0)) return void listener(req, res);
    void before.answered.then(() => listener(req, res));
  };
}
