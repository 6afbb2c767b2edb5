import "reflect-metadata";
import { randomBytes, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { exportJWK, generateKeyPair, type JWK } from "jose";

/**
 * The federation's PKI without an openssl binary (DESIGN "Layout", certs/): a federation CA,
 * node certificates naming their operator in the SAN as `urn:twinning:operator:MCC-MNC`
 * (server and client auth, for mutual TLS), and JWS signing keys.
 */
x509.cryptoProvider.set(webcrypto as never);

type Key = webcrypto.CryptoKey;
type KeyPair = webcrypto.CryptoKeyPair;

const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

export const OPERATOR_URI_PREFIX = "urn:twinning:operator:";

export interface PemPair {
  readonly certPem: string;
  readonly keyPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

async function importPrivateKey(keyPem: string): Promise<Key> {
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  return (await webcrypto.subtle.importKey("pkcs8", der, EC, true, ["sign"])) as Key;
}

const serial = () => "01" + randomBytes(15).toString("hex");

/** A self-signed federation CA (ECDSA P-256). */
export async function createFederationCa(options: { name?: string; validDays?: number; now?: Date } = {}): Promise<PemPair> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as KeyPair;
  const now = options.now ?? new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${options.name ?? "Twinning Federation CA"}`,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + (options.validDays ?? 3650) * DAY_MS),
    signingAlgorithm: EC,
    keys: keys as never,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey as never)) };
}

/** A node certificate signed by the CA: operator URI, host names and addresses in the SAN. */
export async function issueNodeCertificate(options: {
  ca: PemPair;
  operatorId: string;
  hosts?: readonly string[];
  validDays?: number;
  now?: Date;
}): Promise<PemPair> {
  const caCert = new x509.X509Certificate(options.ca.certPem);
  const caKey = await importPrivateKey(options.ca.keyPem);
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as KeyPair;
  const now = options.now ?? new Date();
  const hosts = options.hosts ?? ["127.0.0.1", "localhost"];
  const names: { type: "url" | "dns" | "ip"; value: string }[] = [
    { type: "url", value: `${OPERATOR_URI_PREFIX}${options.operatorId}` },
    ...hosts.map((h) => ({ type: /^[\d.]+$|:/.test(h) ? ("ip" as const) : ("dns" as const), value: h })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=twinning-node-${options.operatorId}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + (options.validDays ?? 825) * DAY_MS),
    signingAlgorithm: EC,
    publicKey: keys.publicKey as never,
    signingKey: caKey as never,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey as never)) };
}

export type SigningAlgorithm = "ES256" | "EdDSA";

/** A JWS signing key for federation messages: the private JWK and its public JWKS. */
export async function createSigningKey(options: { operatorId: string; alg?: SigningAlgorithm; kid?: string }): Promise<{ privateJwk: JWK; jwks: { keys: JWK[] } }> {
  const alg = options.alg ?? "ES256";
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === "EdDSA" ? { crv: "Ed25519" } : {}) });
  const privateJwk = await exportJWK(privateKey);
  privateJwk.kid = options.kid ?? `${options.operatorId}-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString("hex")}`;
  privateJwk.alg = alg;
  privateJwk.use = "sig";
  const { d: _d, ...publicJwk } = privateJwk;
  return { privateJwk, jwks: { keys: [publicJwk] } };
}

/**
 * The operator a certificate names: its one subjectAltName URI `urn:twinning:operator:<id>`,
 * read from the certificate's DER (Node's `subjectaltname` string is for display; a name with a
 * comma in it could pass for another entry there). None, or more than one: undefined.
 */
export function operatorOfCertificate(der: Uint8Array): string | undefined {
  let names: readonly x509.GeneralName[];
  try {
    names = new x509.X509Certificate(der).getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  } catch {
    return undefined;
  }
  const operators = names.filter((n) => n.type === "url" && n.value.startsWith(OPERATOR_URI_PREFIX)).map((n) => n.value.slice(OPERATOR_URI_PREFIX.length));
  return operators.length === 1 && operators[0] !== "" ? operators[0] : undefined;
}
