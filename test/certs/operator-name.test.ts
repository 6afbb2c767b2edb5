import "reflect-metadata";
import { webcrypto, X509Certificate } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { describe, expect, it } from "vitest";
import { createFederationCa, issueNodeCertificate, operatorOfCertificate } from "../../certs/federation-pki.ts";

x509.cryptoProvider.set(webcrypto as never);

/** A self-signed certificate whose SAN holds exactly `names`, in that order. */
async function certificateNaming(names: { type: "url" | "dns"; value: string }[]): Promise<Uint8Array> {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=test",
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    signingAlgorithm: alg,
    keys: keys as never,
    extensions: [new x509.SubjectAlternativeNameExtension(names, false)],
  });
  return new Uint8Array(cert.rawData);
}

describe("the operator a certificate names", () => {
  it("HLF-IC-001 is its one urn:twinning:operator URI, as the federation PKI issues it", async () => {
    const ca = await createFederationCa();
    const node = await issueNodeCertificate({ ca, operatorId: "002-01" });
    expect(operatorOfCertificate(new X509Certificate(node.certPem).raw)).toBe("002-01");
  });

  it("HLF-IC-001 is read from the certificate's structure: a DNS name holding ',URI:urn:twinning:operator:…,' names no operator", async () => {
    const der = await certificateNaming([
      { type: "dns", value: "a,URI:urn:twinning:operator:009-09,b" },
      { type: "url", value: "urn:twinning:operator:001-01" },
    ]);
    // Node's display string holds the forged text (its commas escaped); the structure is what counts.
    expect(new X509Certificate(der).subjectAltName).toContain("URI:urn:twinning:operator:009-09");
    expect(operatorOfCertificate(der)).toBe("001-01");
  });

  it("HLF-IC-001 none when the certificate names no operator, two operators, or an empty one", async () => {
    expect(operatorOfCertificate(await certificateNaming([{ type: "dns", value: "node.example" }]))).toBeUndefined();
    expect(
      operatorOfCertificate(
        await certificateNaming([
          { type: "url", value: "urn:twinning:operator:001-01" },
          { type: "url", value: "urn:twinning:operator:002-01" },
        ]),
      ),
    ).toBeUndefined();
    expect(operatorOfCertificate(await certificateNaming([{ type: "url", value: "urn:twinning:operator:" }]))).toBeUndefined();
    expect(operatorOfCertificate(new Uint8Array([1, 2, 3]))).toBeUndefined();
  });
});
