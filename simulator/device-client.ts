/**
 * A small client of the device, OAuth and admin APIs (DESIGN "Device API", "Tokens"): real
 * HTTP, JSON in and out. The simulator drives nodes with it; the tests use it too.
 */
export const enc = (address: string): string => encodeURIComponent(address);

export interface ApiResponse<T = any> {
  readonly status: number;
  readonly body: T;
  readonly headers: Headers;
}

/** The OMA error's messageId, whichever exception kind carries it. */
export function messageId(body: any): string | undefined {
  const e = body?.requestError;
  return e?.serviceException?.messageId ?? e?.policyException?.messageId;
}

/** How long one call may take, its answer read: above the longest long-poll the simulator and the tests ask for (20 s). */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

export class Api {
  /** `timeoutMs`: every call's deadline unless the call gives its own. */
  constructor(
    readonly baseUrl: string,
    readonly timeoutMs = DEFAULT_CALL_TIMEOUT_MS,
  ) {}

  /** One request; a node that never answers fails it after `timeoutMs` (default 30 s), not undici's 300 s. */
  async call<T = any>(
    method: string,
    path: string,
    options: { token?: string | undefined; body?: unknown; headers?: Record<string, string>; rawBody?: string; timeoutMs?: number } = {},
  ): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["content-type"] ??= "application/json";
    }
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const signal = AbortSignal.timeout(timeoutMs);
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${this.baseUrl}${path}`, { method, headers, signal, ...(body !== undefined ? { body } : {}) });
      text = await res.text();
    } catch (error) {
      // The deadline's own error says only "aborted due to timeout": name the call instead.
      if ((error as Error).name === "TimeoutError") throw new Error(`${method} ${this.baseUrl}${path}: no answer within ${timeoutMs} ms`);
      throw error;
    }
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

  /** POST /oauth/token with client_credentials (HTTP Basic, client id form-encoded), within the call's deadline. */
  async token(address: string, credential: string): Promise<string> {
    const res = await this.call<unknown>("POST", "/oauth/token", {
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(address)}:${encodeURIComponent(credential)}`).toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      rawBody: "grant_type=client_credentials&scope=twinning",
    });
    if (res.status !== 200) throw new Error(`token failed: ${res.status}`);
    const accessToken = (res.body as { access_token?: unknown } | undefined)?.access_token;
    // call() keeps an answer that is not JSON as text: name what is wrong, not JSON.parse's complaint.
    if (typeof accessToken !== "string" || !accessToken) throw new Error(`token failed: ${res.status} answer is not JSON with an access_token (content-type ${res.headers.get("content-type") ?? "none"})`);
    return accessToken;
  }

  /** Provisions a subscriber and returns a `twinning` token for it. */
  async subscriber(adminToken: string, address: string): Promise<string> {
    return this.token(address, await this.provision(adminToken, address));
  }

  /** Secondary requests a code, primary redeems it (same node): the twin and both tokens. */
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
