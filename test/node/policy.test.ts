import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, mergeEnvironment, parseNodeConfig, unknownEnvironmentVariables } from "../../node/config/node-config.ts";
import { loadNodeConfig } from "../../node/config/load-config.ts";
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManualClock } from "../helpers/manual-clock.ts";
import { Api, enc, messageId, newAddress, startTestNode, type TestNode } from "../helpers/test-node.ts";

describe("HLF-CM-006 service-provider policy is configuration, validated at start", () => {
  it("HLF-CM-006 defaults: 6-digit codes, 300 s lifetime, attempt limits, twin cap, token lifetimes", () => {
    const c = parseNodeConfig({});
    expect(c.policy).toMatchObject({ codeLength: 6, codeTtlSeconds: 300, maxFailedAttemptsPerPrimary: 5, maxTwinsPerPrimary: 10, accessTokenTtlSeconds: 3600 });
    expect(c.operatorId).toBe("001-01");
  });

  it("HLF-CM-006 a bad value fails with a message naming the field and where it came from", () => {
    const { input, origins } = mergeEnvironment({}, { TWINNING_POLICY_CODE_LENGTH: "3", TWINNING_OPERATOR_ID: "1-1" });
    expect(() => parseNodeConfig(input, origins)).toThrow(ConfigError);
    try {
      parseNodeConfig(input, origins);
    } catch (error) {
      expect((error as Error).message).toContain("policy.codeLength");
      expect((error as Error).message).toContain("TWINNING_POLICY_CODE_LENGTH");
      expect((error as Error).message).toContain("operatorId");
    }
    expect(() => parseNodeConfig({ policy: { codeTtlSecs: 10 } })).toThrow(/policy/);
  });

  it("HLF-CM-006 values that would break the node at run time are refused at start: an admin token no bearer header can carry, half a TLS setup, a non-http(s) URL", () => {
    expect(() => parseNodeConfig({ adminToken: "Adm1n!Passw0rd#2024-operator-xyz" })).toThrow(/adminToken/);
    expect(() => parseNodeConfig({ adminToken: "a-long-enough-admin-token-of-base64url_chars" })).not.toThrow();
    expect(() => parseNodeConfig({ device: { tlsCertFile: "cert.pem" } })).toThrow(/tlsKeyFile/);
    expect(() => parseNodeConfig({ device: { tlsCertFile: "cert.pem", tlsKeyFile: "key.pem" } })).not.toThrow();
    // An empty file name (a template's unset variable) is half a TLS setup too, not plain HTTP.
    expect(() => parseNodeConfig({ device: { tlsCertFile: "cert.pem", tlsKeyFile: "" } })).toThrow(/device\.tlsKeyFile/);
    expect(() => parseNodeConfig({ device: { tlsCertFile: "", tlsKeyFile: "" } })).toThrow(/device\.tlsCertFile/);
    // Delays that cross: the cap would override the first delay of every retry.
    expect(() => parseNodeConfig({ delivery: { retryBaseDelayMs: 600_000, retryMaxDelayMs: 100 } })).toThrow(/delivery\.retryBaseDelayMs: retryBaseDelayMs must not exceed retryMaxDelayMs/);
    expect(() => parseNodeConfig({ externalIssuer: { issuer: "https://idp.example", jwksUrl: "file:///etc/jwks.json" } })).toThrow(/externalIssuer\.jwksUrl/);
    expect(() => parseNodeConfig({ primaryServices: { messagingUrl: "mailto:ops@example.com" } })).toThrow(/messagingUrl/);
    expect(() => parseNodeConfig({ primaryServices: { messagingUrl: "https://msg.example/v1" } })).not.toThrow();
  });

  it("HLF-CM-006 a listener's URL must be one others can call: set when it listens on every interface, https for the federation (its listener is TLS)", () => {
    const fed = { caFile: "ca.pem", certFile: "node.pem", keyFile: "node.key", signingKeyFiles: ["k.json"] };
    for (const host of ["0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0", "::ffff:0.0.0.0"]) {
      expect(() => parseNodeConfig({ device: { host } })).toThrow(/device\.publicUrl: set publicUrl/);
      expect(() => parseNodeConfig({ device: { host, publicUrl: "https://twinning.op.example" } })).not.toThrow();
      expect(() => parseNodeConfig({ federation: { ...fed, host } })).toThrow(/federation\.publicUrl: set publicUrl/);
      expect(() => parseNodeConfig({ federation: { ...fed, host, publicUrl: "https://fed.op.example:8443" } })).not.toThrow();
    }
    expect(() => parseNodeConfig({ federation: { ...fed, publicUrl: "http://fed.op.example:8443" } })).toThrow(/federation\.publicUrl/);
    expect(() => parseNodeConfig({ federation: fed, device: { host: "10.1.2.3" } })).not.toThrow();
    expect(() => parseNodeConfig({ device: { host: "::1" } })).not.toThrow();
  });

  it("HLF-CM-006 a federation body limit below 64 KiB is refused at start: a peer's full batch of queued messages must fit it", () => {
    expect(() => parseNodeConfig({ federation: { maxBodyBytes: 65_535 } })).toThrow(/federation\.maxBodyBytes/);
    expect(() => parseNodeConfig({ federation: { maxBodyBytes: 65_536 } })).not.toThrow(/maxBodyBytes/);
  });

  it("HLF-CM-006 a config file and the environment combine; the environment wins", () => {
    const dir = mkdtempSync(join(tmpdir(), "twinning-config-"));
    try {
      const file = join(dir, "node.json");
      writeFileSync(file, JSON.stringify({ operatorId: "002-01", policy: { codeLength: 8, maxTwinsPerPrimary: 2 } }));
      const c = loadNodeConfig({ TWINNING_CONFIG: file, TWINNING_POLICY_MAX_TWINS_PER_PRIMARY: "4", TWINNING_POLICY_ALLOWED_PEER_OPERATORS: "001-01, 003-001" });
      expect(c.operatorId).toBe("002-01");
      expect(c.policy.codeLength).toBe(8);
      expect(c.policy.maxTwinsPerPrimary).toBe(4);
      expect(c.policy.allowedPeerOperators).toEqual(["001-01", "003-001"]);
      // A bad value names its source: the file, or the variable that overrode it.
      writeFileSync(file, JSON.stringify({ policy: { codeLength: 20, maxTwinsPerPrimary: 0 } }));
      let message = "";
      try {
        loadNodeConfig({ TWINNING_CONFIG: file, TWINNING_POLICY_MAX_TWINS_PER_PRIMARY: "-1" });
      } catch (error) {
        message = (error as ConfigError).message;
      }
      expect(message).toMatch(/policy\.codeLength: .*\(from .*node\.json\)/);
      expect(message).toMatch(/policy\.maxTwinsPerPrimary: .*\(from TWINNING_POLICY_MAX_TWINS_PER_PRIMARY\)/);
      // Not JSON: named, without quoting the text near the fault (it may be a secret).
      writeFileSync(file, '{"adminToken": "secret-admin-token-0123456789abcdef" x}');
      expect(() => loadNodeConfig({ TWINNING_CONFIG: file })).toThrow(/not valid JSON$/);
      expect(() => loadNodeConfig({ TWINNING_CONFIG: file })).not.toThrow(/secret-admin/);
      writeFileSync(file, "[1]");
      expect(() => loadNodeConfig({ TWINNING_CONFIG: file })).toThrow(/not a JSON object/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("configuration from the environment", () => {
  it("HLF-CM-006 a TWINNING_* variable that names no setting (a typo) is named at start; Kubernetes' service links are not", () => {
    const env = {
      TWINNING_DELIVERY_MAX_DELAY_MS: "abc",
      TWINNING_POLICY_CODE_LENGHT: "3",
      TWINNING_DELIVERY_RETRY_MAX_DELAY_MS: "5000",
      TWINNING_CONFIG: "",
      OTHER_VARIABLE: "x",
      TWINNING_SERVICE_HOST: "10.0.0.1",
      TWINNING_NODE_SERVICE_PORT_HTTP: "8080",
      TWINNING_PORT: "tcp://10.0.0.1:8080",
      TWINNING_PORT_8080_TCP_ADDR: "10.0.0.1",
    };
    expect(unknownEnvironmentVariables(env)).toEqual(["TWINNING_DELIVERY_MAX_DELAY_MS", "TWINNING_POLICY_CODE_LENGHT"]);
    expect(loadNodeConfig(env).delivery.retryMaxDelayMs).toBe(5000);
  });

  it("HLF-CM-006 numbers are read in decimal only, and a list with no item is refused rather than read as empty (which would allow every peer)", () => {
    for (const raw of ["0x1F90", "1e3", "Infinity", "8080abc"]) {
      expect(() => mergeEnvironment({}, { TWINNING_DEVICE_PORT: raw }), raw).toThrow(`device.port: expected a decimal number, got ${JSON.stringify(raw)} (from TWINNING_DEVICE_PORT)`);
    }
    expect(loadNodeConfig({ TWINNING_DEVICE_PORT: " 8081 " }).device.port).toBe(8081);
    expect(() => mergeEnvironment({ policy: { allowedPeerOperators: ["002-01"] } }, { TWINNING_POLICY_ALLOWED_PEER_OPERATORS: " , " })).toThrow(
      /policy\.allowedPeerOperators: a comma-separated list with no item .*\(from TWINNING_POLICY_ALLOWED_PEER_OPERATORS\)/,
    );
  });

  it("HLF-CM-006 a variable set but empty is refused, not taken as unset (an empty TLS file name would serve plain HTTP, an empty metrics token leave /metrics open); each is named", () => {
    const env = { TWINNING_DEVICE_TLS_CERT_FILE: "", TWINNING_DEVICE_TLS_KEY_FILE: " ", TWINNING_METRICS_TOKEN: "", TWINNING_POLICY_CODE_LENGTH: "7" };
    let message = "";
    try {
      loadNodeConfig(env);
    } catch (error) {
      message = (error as Error).message;
    }
    for (const [field, name] of [["device.tlsCertFile", "TWINNING_DEVICE_TLS_CERT_FILE"], ["device.tlsKeyFile", "TWINNING_DEVICE_TLS_KEY_FILE"], ["metricsToken", "TWINNING_METRICS_TOKEN"]]) {
      expect(message).toContain(`${field}: set but empty: give it a value, or unset it for the file's value or the default (from ${name})`);
    }
    expect(message).not.toContain("TWINNING_POLICY_CODE_LENGTH");
    // TWINNING_CONFIG is the file's name, not a setting: empty means none.
    expect(loadNodeConfig({ TWINNING_CONFIG: "", TWINNING_POLICY_CODE_LENGTH: "7" }).policy.codeLength).toBe(7);
  });

  it("HLF-CM-006 a rule across fields names the fields beside it that the environment set", () => {
    expect(() => loadNodeConfig({ TWINNING_DEVICE_TLS_CERT_FILE: "node.crt.pem" })).toThrow(/device\.tlsKeyFile: .*\(device\.tlsCertFile from TWINNING_DEVICE_TLS_CERT_FILE\)/);
  });

  it("HLF-IC-001 one federation field set without the files it needs: the error says federation is on because of it", () => {
    expect(() => loadNodeConfig({ TWINNING_FEDERATION_PORT: "9999" })).toThrow(/federation\.caFile: .*\n[^]*Federation is on as soon as any federation\.\* field is set \(here federation\.port \(from TWINNING_FEDERATION_PORT\)\)/);
  });
});

describe("the node's own secrets in its data directory", () => {
  it("are checked when read back: a hand-edited admin token, code secret or token signing key stops the start, and the error quotes none of them", async () => {
    const { loadOrCreateSecrets } = await import("../../node/server/node-secrets.ts");
    const { readFileSync, statSync } = await import("node:fs");
    const dir = mkdtempSync(join(tmpdir(), "twinning-secrets-"));
    try {
      const dataDir = join(dir, "data");
      const made = await loadOrCreateSecrets(dataDir, undefined);
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      expect((await loadOrCreateSecrets(dataDir, undefined)).adminToken).toBe(made.adminToken);
      for (const [file, bad] of [
        ["admin-token", "hand-typed!"],
        ["code-secret", ""],
        ["code-secret", "c2hvcnQ"],
        // Empty, as a crash in the middle of writing it would have left it before.
        ["signing-key.jwk.json", ""],
        ["signing-key.jwk.json", '{"kty":"EC","crv":"P-256","x":"secret-part-of-a-key"'],
        ["signing-key.jwk.json", JSON.stringify({ ...JSON.parse(readFileSync(join(dataDir, "signing-key.jwk.json"), "utf8")), d: undefined })],
      ] as const) {
        const good = readFileSync(join(dataDir, file), "utf8");
        writeFileSync(join(dataDir, file), bad);
        const error = await loadOrCreateSecrets(dataDir, undefined).then(() => undefined, (e: Error) => e);
        expect(error?.message, `${file}: ${bad}`).toContain(join(dataDir, file));
        expect(error?.message, `${file}: ${bad}`).toMatch(/delete the file to make a new one, or fix it/);
        if (bad.length > 0) expect(error?.message).not.toContain(bad.slice(0, 20));
        writeFileSync(join(dataDir, file), good);
      }
      expect((await loadOrCreateSecrets(dataDir, undefined)).adminToken).toBe(made.adminToken);
      // Written whole or not at all: no partial file is left beside them.
      expect(readdirSync(dataDir).sort()).toEqual(["admin-token", "code-secret", "signing-key.jwk.json"]);
      // A file others may read is named, so the start can say so.
      expect(made.readableByOthers).toEqual([]);
      chmodSync(join(dataDir, "code-secret"), 0o644);
      expect((await loadOrCreateSecrets(dataDir, undefined)).readableByOthers).toEqual([join(dataDir, "code-secret")]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("HLF-CM-006 policy in force on a node", () => {
  let t: TestNode;
  let api: Api;
  const clock = new ManualClock();
  beforeAll(async () => {
    t = await startTestNode(
      { policy: { codeLength: 8, maxFailedAttemptsPerPrimary: 3, maxFailedAttemptsPerOperator: 5, failedAttemptWindowSeconds: 600, accessTokenTtlSeconds: 120 } },
      { nowMs: clock.now },
    );
    api = new Api(t.url);
  });
  afterAll(async () => t.cleanup());
  const party = async () => {
    const address = newAddress();
    return { address, token: await api.subscriber(t.node.adminToken, address) };
  };
  const redeem = (p: { address: string; token: string }, code: string) =>
    api.call("POST", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token, body: { activationCode: code, operatorId: "001-01" } });

  it("HLF-CM-006 code length follows policy", async () => {
    const s = await party();
    const res = await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token });
    expect(res.body.activationCode.code).toMatch(/^\d{8}$/);
  });

  it("HLF-CM-006 failed redemptions are limited per primary (429 POL3004 with Retry-After), even for the right code", async () => {
    const [p, s] = [await party(), await party()];
    const code = (await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: s.token })).body.activationCode.code as string;
    const wrong = code === "00000000" ? "11111111" : "00000000";
    for (let i = 0; i < 3; i++) expect(messageId((await redeem(p, wrong)).body)).toBe("SVC3001");
    const limited = await redeem(p, code);
    expect([limited.status, messageId(limited.body)]).toEqual([429, "POL3004"]);
    expect(Number(limited.headers.get("retry-after"))).toBe(600);
    clock.advance(601_000);
    const fresh = await api.call("POST", `/twinning/v1/secondary/${enc(s.address)}/activationCodes`, { token: await api.token(s.address, `secret-${s.address.slice(-6)}`) });
    const after = await redeem({ address: p.address, token: await api.token(p.address, `secret-${p.address.slice(-6)}`) }, fresh.body.activationCode.code);
    expect(after.status).toBe(201);
  });

  it("HLF-CM-006 failed redemptions are limited per operator across primaries", async () => {
    clock.advance(601_000);
    const primaries = await Promise.all([party(), party(), party()]);
    let limited = 0;
    for (let i = 0; i < 6; i++) {
      const res = await redeem(primaries[i % 3]!, "99999999");
      if (res.status === 429) limited++;
    }
    // 5 failures are allowed operator-wide, the 6th is refused though no primary reached its own limit of 3.
    expect(limited).toBe(1);
  });

  it("HLF-CM-006 access token lifetime follows policy; an expired token is refused", async () => {
    const p = await party();
    expect((await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token })).status).toBe(200);
    clock.advance(121_000);
    const expired = await api.call("GET", `/twinning/v1/primary/${enc(p.address)}/twins`, { token: p.token });
    expect([expired.status, messageId(expired.body)]).toEqual([401, "SVC2003"]);
  });
});
