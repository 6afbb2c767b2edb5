import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";

/**
 * Requests pipelined on one connection take effect in the order they were sent (RFC 9112 §9.3.2).
 * Node hands a pipelined request to the listener as soon as it has parsed it, while the change
 * before it may not have committed yet (the group commit's next turn): `PUT status Off` then
 * `GET twinning` in one write read the status from before the PUT. Node already queues the
 * answers of a connection: a response gets the socket only once the one before it has finished,
 * and never on a connection that has died. So a request whose response has no socket yet waits
 * for it: pipelined requests run one after another, and those behind a client that left never
 * run. A request alone on its connection (the usual case) has its socket already and runs at once.
 */
export function inRequestOrder(listener: RequestListener): RequestListener {
  return (req: IncomingMessage, res: ServerResponse) => {
    if (res.socket) return void listener(req, res);
    res.once("socket", () => listener(req, res));
  };
}
