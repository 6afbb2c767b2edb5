import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseNodeConfig, type NodeConfigInput } from "../../node/config/node-config.ts";
import { startNode, type RunningNode, type StartNodeOptions } from "../../node/server/start-node.ts";

export interface TestNode {
  readonly node: RunningNode;
  readonly url: string;
  readonly dataDir: string;
  /** Stops the node (the data directory stays until `cleanup`). */
  stop(): Promise<void>;
  /** Stops the node and removes its data directory. */
  cleanup(): Promise<void>;
}

/** A real node on 127.0.0.1, on a port the OS picks, on a temporary SQLite file. */
export async function startTestNode(
  overrides: NodeConfigInput = {},
  options: StartNodeOptions & { dataDir?: string } = {},
): Promise<TestNode> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "twinning-test-"));
  const config = parseNodeConfig({
    logLevel: "silent",
    ...overrides,
    dataDir,
    device: { host: "127.0.0.1", port: 0, ...(overrides.device ?? {}) },
    delivery: { retryBaseDelayMs: 20, retryMaxDelayMs: 200, ...(overrides.delivery ?? {}) },
  });
  const node = await startNode(config, options);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await node.stop();
  };
  return {
    node,
    url: node.deviceUrl,
    dataDir,
    stop,
    async cleanup() {
      await stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const enc = (address: string): string => encodeURIComponent(address);

export interface ApiResponse<T = any> {
  readonly status: number;
  readonly body: T;
  readonly headers: Headers;
}

/** A small HTTP client for the device API: real sockets, JSON in and out. */
export class Api {
  constructor(readonly baseUrl: string) {}

  async call<T = any>(method: string, path: string, options: { token?: string | undefined; body?: unknown; headers?: Record<string, string>; rawBody?: string } = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await fetch(`${this.baseUrl}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }

  /** PUT /admin/v1/subscribers/{addr} */
  async provision(adminToken: string, address: string, credential = `secret-${address.slice(-6)}`): Promise<string> {
    const res = await this.call("PUT", `/admin/v1/subscribers/${enc(address)}`, { token: adminToken, body: { subscriber: { twinning: true, credential } } });
    if (res.status !== 201 && res.status !== 200) throw new Error(`provision failed: ${res.status}`);
    return credential;
  }

  /** POST /oauth/token with client_credentials (HTTP Basic). */
  async token(address: string, credential: string): Promise<string> {
    const res = await fetch(`${this.baseUrl}/oauth/token`, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(address)}:${encodeURIComponent(credential)}`).toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: "grant_type=client_credentials&scope=twinning",
    });
    const body = (await res.json()) as { access_token?: string };
    if (res.status !== 200 || !body.access_token) throw new Error(`token failed: ${res.status}`);
    return body.access_token;
  }

  /** Provisions a subscriber and returns a `twinning` token for it. */
  async subscriber(adminToken: string, address: string): Promise<string> {
    return this.token(address, await this.provision(adminToken, address));
  }

  /** Secondary requests a code, primary redeems it: the twin and both tokens. */
  async twin(primary: { address: string; token: string }, secondary: { address: string; token: string }, name?: string) {
    const code = await this.call("POST", `/twinning/v1/secondary/${enc(secondary.address)}/activationCodes`, { token: secondary.token, body: {} });
    if (code.status !== 201) throw new Error(`code request failed: ${code.status} ${JSON.stringify(code.body)}`);
    const activation = await this.call("POST", `/twinning/v1/primary/${enc(primary.address)}/twins`, {
      token: primary.token,
      body: { activationCode: code.body.activationCode.code, operatorId: code.body.activationCode.operatorId, ...(name ? { name } : {}) },
    });
    if (activation.status !== 201) throw new Error(`activation failed: ${activation.status} ${JSON.stringify(activation.body)}`);
    return { twin: activation.body.twin, primaryTwinToken: activation.body.twin.accessToken as string, codeResource: code.body.activationCode };
  }
}

/** The OMA error's messageId, whichever exception kind carries it. */
export function messageId(body: any): string | undefined {
  const e = body?.requestError;
  return e?.serviceException?.messageId ?? e?.policyException?.messageId;
}

let counter = 0;
/** A fresh subscriber address per call, so tests never collide. */
export function newAddress(): string {
  counter += 1;
  return `tel:+1555${String(process.pid % 1000).padStart(3, "0")}${String(counter).padStart(5, "0")}`;
}
