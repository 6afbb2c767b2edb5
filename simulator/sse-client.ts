import { DEFAULT_CALL_TIMEOUT_MS } from "./device-client.ts";

/** A minimal Server-Sent Events reader over fetch, for tests: collects `{id, event, data}` frames. */
export interface SseEvent {
  id: string | undefined;
  event: string | undefined;
  data: any;
}

export class SseClient {
  readonly events: SseEvent[] = [];
  readonly #controller = new AbortController();
  #waiters: (() => void)[] = [];
  #done: Promise<void> | undefined;
  status = 0;

  /**
   * Opens the stream; a node that does not answer with its headers within `timeoutMs` (default
   * 30 s) fails the open. The stream itself then stays open as long as the node keeps it.
   */
  static async open(url: string, token: string, lastEventId?: string, timeoutMs = DEFAULT_CALL_TIMEOUT_MS): Promise<SseClient> {
    const client = new SseClient();
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: "text/event-stream" };
    if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
    // Not AbortSignal.timeout on the fetch: that would also cut the stream after the headers.
    const timer = setTimeout(() => client.#controller.abort(new Error(`event stream ${url}: no answer within ${timeoutMs} ms`)), timeoutMs);
    let res: Response;
    try {
      res = await fetch(url, { headers, signal: client.#controller.signal });
    } finally {
      clearTimeout(timer);
    }
    client.status = res.status;
    if (res.ok && res.body) client.#done = client.#read(res.body).catch(() => undefined);
    else await res.body?.cancel();
    return client;
  }

  async #read(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of body) {
      buffer += decoder.decode(chunk, { stream: true });
      let cut: number;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const fields: Record<string, string> = {};
        for (const line of frame.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          if (i > 0) fields[line.slice(0, i)] = (fields[line.slice(0, i)] ? fields[line.slice(0, i)] + "\n" : "") + line.slice(i + 1).trimStart();
        }
        if (fields.data !== undefined) {
          this.events.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data) });
          for (const w of this.#waiters.splice(0)) w();
        }
      }
    }
  }

  /** Waits (bounded) for at least n events; wakes as soon as an event arrives. */
  async waitFor(n: number, timeoutMs = 5_000): Promise<SseEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`expected ${n} SSE events, got ${this.events.length}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.events;
  }

  /** Resolves once the server has ended the stream; rejects after `timeoutMs`. */
  async ended(timeoutMs = 5_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("the stream did not end")), timeoutMs)));
    try {
      await Promise.race([this.#done ?? Promise.resolve(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.#controller.abort();
    await this.#done;
  }
}
