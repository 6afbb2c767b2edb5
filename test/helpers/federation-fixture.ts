import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JWK } from "jose";
import { createFederationCa, createSigningKey, issueNodeCertificate, type PemPair } from "../../certs/federation-pki.ts";
import type { NodeConfigInput } from "../../node/config/node-config.ts";
import type { StartNodeOptions } from "../../node/server/start-node.ts";
import { Api, startTestNode, type TestNode } from "./test-node.ts";

export interface OperatorFiles {
  readonly operatorId: string;
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly signingKeyFile: string;
  readonly publicJwks: { keys: JWK[] };
  readonly peersFile: string;
  readonly tls: PemPair;
}

export interface FederatedOperator extends OperatorFiles {
  t: TestNode;
  api: Api;
  /** The running node (its context gives tests the store and federation). */
  node(): TestNode["node"];
  /** Provisions a subscriber here and returns `{address, token}`. */
  party(address: string): Promise<{ address: string; token: string }>;
}

/** N operators' PKI on disk: one federation CA, a certificate and a signing key per operator. */
export async function createPki(
  root: string,
  operatorIds: readonly string[],
  algFor: (operatorId: string) => "ES256" | "EdDSA" = () => "ES256",
): Promise<{ ca: PemPair; caFile: string; operators: OperatorFiles[] }> {
  const ca = await createFederationCa();
  const caFile = join(root, "ca.crt.pem");
  writeFileSync(caFile, ca.certPem);
  const operators: OperatorFiles[] = [];
  for (const operatorId of operatorIds) {
    const dir = join(root, operatorId);
    mkdirSync(dir, { recursive: true });
    const tls = await issueNodeCertificate({ ca, operatorId });
    const key = await createSigningKey({ operatorId, alg: algFor(operatorId) });
    const files = {
      operatorId,
      dir,
      certFile: join(dir, "node.crt.pem"),
      keyFile: join(dir, "node.key.pem"),
      signingKeyFile: join(dir, "signing-key.jwk.json"),
      publicJwks: key.jwks,
      peersFile: join(dir, "peers.json"),
      tls,
    };
    writeFileSync(files.certFile, tls.certPem);
    writeFileSync(files.keyFile, tls.keyPem);
    writeFileSync(files.signingKeyFile, JSON.stringify(key.privateJwk));
    writeFileSync(files.peersFile, JSON.stringify({ peers: [] }));
    operators.push(files);
  }
  return { ca, caFile, operators };
}

/** Writes each operator's peer list naming all the others, with their federation URLs and keys. */
export function writePeerFiles(operators: readonly (OperatorFiles & { federationUrl: string; extraKeys?: JWK[] })[]): void {
  for (const me of operators) {
    const peers = operators
      .filter((o) => o.operatorId !== me.operatorId)
      .map((o) => ({ operatorId: o.operatorId, federationUrl: o.federationUrl, jwks: { keys: [...o.publicJwks.keys, ...(o.extraKeys ?? [])] } }));
    writeFileSync(me.peersFile, JSON.stringify({ peers }));
  }
}

export class Federation {
  readonly root = mkdtempSync(join(tmpdir(), "twinning-fed-"));
  operators: FederatedOperator[] = [];
  caFile = "";
  ca: PemPair | undefined;
  readonly #configs = new Map<string, NodeConfigInput>();
  /** The JWS algorithm of each operator's signing key (set before start). */
  algFor: (operatorId: string) => "ES256" | "EdDSA" = () => "ES256";

  /** Starts one node per operator on loopback (device HTTP + federation mTLS) and connects them. */
  async start(operatorIds: readonly string[], config: (operatorId: string) => NodeConfigInput = () => ({}), options: (operatorId: string) => StartNodeOptions = () => ({})): Promise<this> {
    const pki = await createPki(this.root, operatorIds, this.algFor);
    this.caFile = pki.caFile;
    this.ca = pki.ca;
    for (const files of pki.operators) {
      this.#configs.set(files.operatorId, config(files.operatorId));
      const t = await this.#startNode(files, config(files.operatorId), options(files.operatorId));
      this.operators.push(this.#wrap(files, t));
    }
    await this.connect();
    return this;
  }

  async #startNode(files: OperatorFiles, extra: NodeConfigInput, options: StartNodeOptions, dataDir?: string): Promise<TestNode> {
    return startTestNode(
      {
        operatorId: files.operatorId,
        ...extra,
        federation: {
          host: "127.0.0.1",
          port: 0,
          caFile: this.caFile,
          certFile: files.certFile,
          keyFile: files.keyFile,
          signingKeyFiles: [files.signingKeyFile],
          peersFile: files.peersFile,
          ...(extra.federation ?? {}),
        },
      },
      { ...options, dataDir: dataDir ?? join(files.dir, "data") },
    );
  }

  #wrap(files: OperatorFiles, t: TestNode): FederatedOperator {
    const api = new Api(t.url);
    return {
      ...files,
      t,
      api,
      node: () => t.node,
      party: async (address: string) => ({ address, token: await api.subscriber(t.node.adminToken, address) }),
    };
  }

  /** Rewrites every peer file with the current URLs and reloads every node. */
  async connect(): Promise<void> {
    writePeerFiles(this.operators.map((o) => ({ ...o, federationUrl: o.t.node.federationUrl! })));
    for (const o of this.operators) await o.t.node.reloadFederation();
  }

  get(operatorId: string): FederatedOperator {
    const o = this.operators.find((x) => x.operatorId === operatorId);
    if (!o) throw new Error(`no operator ${operatorId}`);
    return o;
  }

  /** Stops one node, keeping its data (to restart it later). */
  async stopNode(operatorId: string): Promise<void> {
    await this.get(operatorId).t.stop();
  }

  /** Restarts a stopped node on the same data and the same federation port, then reconnects peers. */
  async restartNode(operatorId: string, extra: NodeConfigInput = {}): Promise<FederatedOperator> {
    const old = this.get(operatorId);
    const port = Number(new URL(old.t.node.federationUrl!).port);
    const base = this.#configs.get(operatorId) ?? {};
    const t = await this.#startNode(old, { ...base, ...extra, federation: { port, ...(base.federation ?? {}), ...(extra.federation ?? {}) } as never }, {}, old.t.dataDir);
    const fresh = this.#wrap(old, t);
    this.operators = this.operators.map((o) => (o.operatorId === operatorId ? fresh : o));
    await this.connect();
    return fresh;
  }

  async stop(): Promise<void> {
    for (const o of this.operators) await o.t.stop();
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Polls (bounded) until the check passes; for effects that travel through the outbox. */
export async function eventually<T>(check: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
