import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { operatorOfCertificate } from "../../certs/federation-pki.ts";
import { FEDERATION_CONTENT_TYPE, importSigningKey, MessageSigner, type FederationClaims } from "../../peers/message-codec.ts";
import { writeFileSync } from "node:fs";
import type { Federation, OperatorFiles } from "./federation-fixture.ts";

export interface ScriptedRequest {
  readonly method: string;
  /** The path below `/federation/v1`. */
  readonly path: string;
  readonly claims: FederationClaims;
}

/** The answer to a request; a promise holds the answer back until it settles (a slow peer). */
export type Script = (request: ScriptedRequest) => { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;

/**
 * A peer operator that answers as a script says: a real mutual-TLS listener on loopback with
 * the operator's certificate, answering with JWS signed by the operator's key, so the node
 * under test verifies it as any peer's answer. For a peer that misbehaves in ways our own
 * nodes never do (a test points a node's peer list at it instead of the real node).
 */
export class ScriptedPeer {
  readonly received: ScriptedRequest[] = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(files: OperatorFiles, caPem: string, script: Script): Promise<ScriptedPeer> {
    const key = await importSigningKey(JSON.parse(readFileSync(files.signingKeyFile, "utf8")));
    const signer = new MessageSigner(files.operatorId, () => key, Date.now);
    let peer: ScriptedPeer | undefined;
    const server = createServer({ cert: files.tls.certPem, key: files.tls.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        void (async () => {
          const jws = Buffer.concat(chunks).toString("utf8");
          // A GET carries no JWS (DESIGN's GET /operator): the caller is its certificate's
          // operator, and the answer names no msgId, as a peer that reads no header of ours.
          const claims =
            req.method === "GET"
              ? ({ iss: operatorOfCertificate((req.socket as TLSSocket).getPeerX509Certificate()!.raw)!, htu: `${peer!.url}${req.url}`, msgId: "", body: undefined } as unknown as FederationClaims)
              : (JSON.parse(Buffer.from(jws.split(".")[1] ?? "", "base64url").toString("utf8")) as FederationClaims);
          const request = { method: req.method ?? "", path: (req.url ?? "").replace(/^\/federation\/v1/, ""), claims };
          peer!.received.push(request);
          const { status, body } = await script(request);
          const answer = await signer.sign({ aud: claims.iss, htm: request.method, htu: claims.htu, msgId: claims.msgId, body });
          res.writeHead(status, { "content-type": FEDERATION_CONTENT_TYPE }).end(answer);
        })().catch(() => res.writeHead(500).end());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    peer = new ScriptedPeer(server, `https://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return peer;
  }

  /**
   * Stops the node of `peerOperatorId` in `fed` and puts a scripted peer in its place, with its
   * certificate and keys, in the peer list of `forOperatorId` (reloaded).
   */
  static async replacing(fed: Federation, peerOperatorId: string, forOperatorId: string, script: Script): Promise<ScriptedPeer> {
    const [node, replaced] = [fed.get(forOperatorId), fed.get(peerOperatorId)];
    await fed.stopNode(peerOperatorId);
    const peer = await ScriptedPeer.start(replaced, fed.ca!.certPem, script);
    writeFileSync(node.peersFile, JSON.stringify({ peers: [{ operatorId: replaced.operatorId, federationUrl: peer.url, jwks: replaced.publicJwks }] }));
    await node.t.node.reloadFederation();
    return peer;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
