import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createFederationCa, createSigningKey, issueNodeCertificate, type PemPair } from "../certs/federation-pki.ts";
import { Api, DEFAULT_CALL_TIMEOUT_MS } from "./device-client.ts";
import { OperatorProcess } from "./operator-process.ts";
import { TcpProxy, freePort } from "./tcp-proxy.ts";

/** DESIGN "Simulator sandbox": the file outside test kits rely on. */
export interface FederationJson {
  operators: { operatorId: string; deviceUrl: string; federationUrl: string; adminToken: string; caFile: string }[];
}

export interface SandboxOperator {
  readonly operatorId: string;
  readonly dir: string;
  readonly process: OperatorProcess;
  readonly deviceUrl: string;
  /** The federation URL peers use (through the partition proxy when there is one). */
  readonly federationUrl: string;
  readonly proxy: TcpProxy | undefined;
  readonly tls: PemPair;
  readonly signingKeyFile: string;
  adminToken: string;
  api: Api;
}

export interface SandboxOptions {
  readonly operators: number;
  readonly dir: string;
  /** Put a partitionable proxy in front of each federation listener (run mode). */
  readonly proxies: boolean;
  /** Keep the nodes running after the simulator exits (`up`). */
  readonly detached?: boolean;
  readonly logLevel?: string;
  /** Settings over the sandbox's own for every node (`limits` and `policy` are merged key by key). */
  readonly nodeConfig?: { readonly [key: string]: unknown; readonly limits?: object; readonly policy?: object };
}

/**
 * Polls GET /readyz until it answers 2xx: true, or false once `timeoutMs` has passed. Each probe
 * ends by that deadline too: a node that accepts the connection and never answers must fail the
 * start, not hold it for undici's 300 s.
 */
export async function waitUntilReady(api: Api, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const probeMs = Math.min(DEFAULT_CALL_TIMEOUT_MS, Math.max(100, deadline - Date.now()));
    const ok = await api.call("GET", "/readyz", { timeoutMs: probeMs }).then((r) => r.status >= 200 && r.status < 300, () => false);
    if (ok) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const operatorIdOf = (i: number) => `00${i + 1}-01`.slice(-6);

/**
 * N operators on loopback, each a real node process, with a fresh federation CA, certificates,
 * signing keys and peer lists. Ports are fixed at creation so a killed node restarts at the
 * same URLs.
 */
export class Sandbox {
  readonly operators: SandboxOperator[] = [];
  /** Set by stop(): nothing starts a node of this sandbox again (a crash loop's restart racing a Ctrl-C). */
  #stopped = false;
  ca!: PemPair;
  caFile = "";

  private constructor(readonly options: SandboxOptions) {}

  /** Sandboxes whose nodes this process runs (a detached one only until it is up). */
  static readonly #live = new Set<Sandbox>();

  /** Stops every sandbox this process started (on SIGINT or SIGTERM of the simulator). */
  static async stopAll(): Promise<void> {
    await Promise.all([...Sandbox.#live].map((s) => s.stop()));
  }

  /** Starts the nodes; if one cannot start, the others are stopped before the error is thrown. */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    const sandbox = new Sandbox(options);
    Sandbox.#live.add(sandbox);
    try {
      await sandbox.#prepare();
      const started = await Promise.allSettled(sandbox.operators.map((o) => o.process.start(options.detached ? { detached: true } : {})));
      const failed = started.find((s) => s.status === "rejected");
      if (failed) throw failed.reason;
      await Promise.all(sandbox.operators.map((o) => sandbox.#whenReady(o)));
    } catch (error) {
      await sandbox.stop();
      throw error;
    }
    if (options.detached) Sandbox.#live.delete(sandbox);
    return sandbox;
  }

  async #prepare(): Promise<void> {
    const root = resolve(this.options.dir);
    mkdirSync(root, { recursive: true });
    this.ca = await createFederationCa({ name: "Simulator Federation CA" });
    this.caFile = join(root, "ca.crt.pem");
    writeFileSync(this.caFile, this.ca.certPem);
    const plans = [];
    for (let i = 0; i < this.options.operators; i++) {
      const operatorId = operatorIdOf(i);
      const dir = join(root, operatorId);
      mkdirSync(dir, { recursive: true });
      const tls = await issueNodeCertificate({ ca: this.ca, operatorId });
      const key = await createSigningKey({ operatorId });
      writeFileSync(join(dir, "node.crt.pem"), tls.certPem);
      writeFileSync(join(dir, "node.key.pem"), tls.keyPem, { mode: 0o600 });
      writeFileSync(join(dir, "signing-key.jwk.json"), JSON.stringify(key.privateJwk), { mode: 0o600 });
      const [devicePort, federationPort] = [await freePort(), await freePort()];
      const proxy = this.options.proxies ? new TcpProxy(federationPort) : undefined;
      const publicPort = proxy ? await proxy.listen() : federationPort;
      plans.push({ operatorId, dir, tls, key, devicePort, federationPort, proxy, federationUrl: `https://127.0.0.1:${publicPort}` });
    }
    for (const plan of plans) {
      const peers = plans
        .filter((p) => p.operatorId !== plan.operatorId)
        .map((p) => ({ operatorId: p.operatorId, federationUrl: p.federationUrl, jwks: p.key.jwks }));
      writeFileSync(join(plan.dir, "peers.json"), JSON.stringify({ peers }, null, 2));
      const config = {
        operatorId: plan.operatorId,
        operatorName: `Simulated operator ${plan.operatorId}`,
        dataDir: join(plan.dir, "data"),
        logLevel: this.options.logLevel ?? "info",
        device: { host: "127.0.0.1", port: plan.devicePort },
        // Short lifetimes and quick retries keep a simulation run under two minutes. Failed
        // redemptions are limited per primary as usual, but not in total: a long-lived sandbox
        // must stay usable after many conformance runs, each making a few.
        policy: { codeTtlSeconds: 10, maxFailedAttemptsTotal: 1_000_000, maxFailedAttemptsPerOperator: 1_000_000 },
        // The scenarios' callback servers listen on loopback.
        limits: { allowPrivateCallbackTargets: true },
        delivery: { retryBaseDelayMs: 100, retryMaxDelayMs: 1_000 },
        federation: {
          host: "127.0.0.1",
          port: plan.federationPort,
          publicUrl: plan.federationUrl,
          caFile: this.caFile,
          certFile: join(plan.dir, "node.crt.pem"),
          keyFile: join(plan.dir, "node.key.pem"),
          signingKeyFiles: [join(plan.dir, "signing-key.jwk.json")],
          peersFile: join(plan.dir, "peers.json"),
          callTimeoutMs: 2_000,
        },
      };
      const over = this.options.nodeConfig ?? {};
      const merged = { ...config, ...over, limits: { ...config.limits, ...over.limits }, policy: { ...config.policy, ...over.policy } };
      const configFile = join(plan.dir, "node.json");
      writeFileSync(configFile, JSON.stringify(merged, null, 2));
      const deviceUrl = `http://127.0.0.1:${plan.devicePort}`;
      this.operators.push({
        operatorId: plan.operatorId,
        dir: plan.dir,
        process: new OperatorProcess(plan.operatorId, configFile, join(plan.dir, "node.log")),
        deviceUrl,
        federationUrl: plan.federationUrl,
        proxy: plan.proxy,
        tls: plan.tls,
        signingKeyFile: join(plan.dir, "signing-key.jwk.json"),
        adminToken: "",
        api: new Api(deviceUrl),
      });
    }
  }

  /** Waits until the node answers /readyz, then reads its admin token. */
  async #whenReady(o: SandboxOperator, timeoutMs = 30_000): Promise<void> {
    if (!(await waitUntilReady(o.api, timeoutMs))) throw new Error(`node ${o.operatorId} is not ready at ${o.deviceUrl}`);
    o.adminToken = readFileSync(join(o.dir, "data", "admin-token"), "utf8").trim();
  }

  get(operatorId: string): SandboxOperator {
    const o = this.operators.find((x) => x.operatorId === operatorId);
    if (!o) throw new Error(`no operator ${operatorId}`);
    return o;
  }

  /** SIGKILL (or another signal): the process dies where it is. */
  async kill(operatorId: string, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await this.get(operatorId).process.kill(signal);
  }

  /** Starts a stopped node again on the same data, ports and keys. */
  async restart(operatorId: string): Promise<void> {
    if (this.#stopped) throw new Error(`the sandbox is stopped: ${operatorId} is not started again`);
    const o = this.get(operatorId);
    await o.process.start();
    await this.#whenReady(o);
  }

  /**
   * A partition of these operators' federation links until heal: peers' connections are accepted
   * but carry nothing (each call ends by its own timeout), as on a real network.
   */
  partition(...operatorIds: string[]): void {
    for (const id of operatorIds) this.get(id).proxy?.partition();
  }

  heal(...operatorIds: string[]): void {
    for (const id of operatorIds) this.get(id).proxy?.heal();
  }

  federationJson(): FederationJson {
    return {
      operators: this.operators.map((o) => ({ operatorId: o.operatorId, deviceUrl: o.deviceUrl, federationUrl: o.federationUrl, adminToken: o.adminToken, caFile: this.caFile })),
    };
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    Sandbox.#live.delete(this);
    await Promise.all(this.operators.map((o) => o.process.kill("SIGTERM")));
    await Promise.all(this.operators.map((o) => o.proxy?.close()));
  }
}
