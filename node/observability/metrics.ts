import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Prometheus metrics of one node; a registry per node so several nodes can share a process. */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"method" | "route" | "status">;
  readonly latency: Histogram<"method" | "route">;
  readonly readyAnswers: Counter<"route">;
  readonly directAnswers: Counter<"route">;
  readonly deliveries: Counter<"kind" | "result">;
  readonly outboxPending: Gauge;
  readonly outboxDead: Gauge;
  readonly sseConnections: Gauge;
  readonly tlsHandshakes: Counter;
  readonly peerCalls: Counter<"peer" | "route" | "status">;
  readonly peerCallLatency: Histogram<"peer" | "route">;
  readonly inboundTlsHandshakes: Counter;

  constructor(options: { defaultMetrics: boolean; outboxStats: () => Promise<{ pending: number; dead: number }>; version: string }) {
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
    // The usual build-info series: 1, with what is running as labels (joined onto alerts and dashboards).
    new Gauge({ name: "twinning_build_info", help: "The node's version and the Node.js version it runs on (value 1)", labelNames: ["version", "nodejs"], registers: [this.registry] }).set(
      { version: options.version, nodejs: process.version },
      1,
    );
    this.requests = new Counter({ name: "twinning_http_requests_total", help: "HTTP requests by route and status", labelNames: ["method", "route", "status"], registers: [this.registry] });
    this.latency = new Histogram({
      name: "twinning_http_request_duration_seconds",
      help: "HTTP request latency",
      labelNames: ["method", "route"],
      // Up to 30 s: a device call that waits on a peer has callTimeoutMs (5 s), a long poll up to 30 s.
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    this.readyAnswers = new Counter({
      name: "twinning_http_ready_answers_total",
      help: "Requests answered from ready answers kept since the last write (also counted in twinning_http_requests_total)",
      labelNames: ["route"],
      registers: [this.registry],
    });
    this.directAnswers = new Counter({
      name: "twinning_http_direct_answers_total",
      help: "Requests answered by a direct route, before the app (also counted in twinning_http_requests_total)",
      labelNames: ["route"],
      registers: [this.registry],
    });
    this.deliveries = new Counter({ name: "twinning_outbox_deliveries_total", help: "Outbox delivery attempts by result", labelNames: ["kind", "result"], registers: [this.registry] });
    // Every series from the start (at 0), so rate() and absent() alerts see them before a first delivery.
    for (const kind of ["peer", "callback"]) for (const result of ["delivered", "retry", "dead"]) this.deliveries.inc({ kind, result }, 0);
    let stats: Promise<{ pending: number; dead: number }> | undefined;
    const read = () => (stats ??= options.outboxStats().finally(() => setImmediate(() => (stats = undefined))));
    this.outboxPending = new Gauge({
      name: "twinning_outbox_depth",
      help: "Outbox entries waiting for delivery",
      registers: [this.registry],
      async collect() {
        this.set((await read()).pending);
      },
    });
    this.outboxDead = new Gauge({
      name: "twinning_outbox_dead_letters",
      help: "Outbox entries given up on (see /admin/v1/deadLetters)",
      registers: [this.registry],
      async collect() {
        this.set((await read()).dead);
      },
    });
    this.tlsHandshakes = new Counter({ name: "twinning_federation_tls_connections_total", help: "New TLS connections opened to peers (one handshake each)", registers: [this.registry] });
    this.inboundTlsHandshakes = new Counter({ name: "twinning_federation_inbound_tls_connections_total", help: "TLS connections peers opened to the federation listener (one handshake each)", registers: [this.registry] });
    // Our calls to peers (deliveries and the calls a device waits on); status 0: no answer.
    this.peerCalls = new Counter({ name: "twinning_peer_requests_total", help: "Signed requests to peer operators by peer, route template and status (0: no answer)", labelNames: ["peer", "route", "status"], registers: [this.registry] });
    this.peerCallLatency = new Histogram({
      name: "twinning_peer_request_duration_seconds",
      help: "Signed requests to peer operators, until their answer (or failure)",
      labelNames: ["peer", "route"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
    this.sseConnections = new Gauge({ name: "twinning_sse_connections", help: "Open Server-Sent Events streams", registers: [this.registry] });
  }
}
