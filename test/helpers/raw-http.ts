import { connect } from "node:net";

/**
 * Writes raw bytes to a plain-HTTP listener (`send` may write in pieces, and may be async) and
 * returns what comes back until the server closes, bounded by `timeoutMs`: for requests no
 * HTTP client would send.
 */
export function rawHttp(url: string, send: (write: (s: string) => void) => void | Promise<void>, timeoutMs = 5_000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let data = "";
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(data);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on("data", (d) => (data += String(d)));
    socket.on("close", done);
    socket.on("error", done);
    socket.on("connect", () => void send((s) => socket.write(s)));
  });
}
