import "reflect-metadata";
import { X509Certificate } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { describe, expect, it } from "vitest";
import { createFederationCa, hostSanEntry, issueNodeCertificate } from "../../certs/federation-pki.ts";

const DAY_MS = 86_400_000;

describe("a node certificate is issued only by a CA that can issue it", () => {
  it("refuses a CA key that belongs to another CA's certificate, and names the mismatch", async () => {
    const [a, b] = [await createFederationCa({ name: "CA A" }), await createFederationCa({ name: "CA B" })];
    await expect(issueNodeCertificate({ ca: { certPem: a.certPem, keyPem: b.keyPem }, operatorId: "001-01" })).rejects.toThrow(
      "the CA key does not belong to the CA certificate (CN=CA A): its public key differs",
    );
  });

  it("a matching pair issues a certificate that verifies against the CA (node:crypto, as TLS does)", async () => {
    const ca = await createFederationCa();
    const node = await issueNodeCertificate({ ca, operatorId: "001-01" });
    const [caCert, nodeCert] = [new X509Certificate(ca.certPem), new X509Certificate(node.certPem)];
    expect(nodeCert.checkIssued(caCert)).toBe(true);
    expect(nodeCert.verify(caCert.publicKey)).toBe(true);
  });

  it("refuses an expired CA, one not yet valid, and a certificate that is not a CA", async () => {
    const expired = await createFederationCa({ now: new Date(Date.now() - 40 * DAY_MS), validDays: 30 });
    await expect(issueNodeCertificate({ ca: expired, operatorId: "001-01" })).rejects.toThrow(/^the CA certificate \(CN=Twinning Federation CA\) expired on \d{4}-/);
    const future = await createFederationCa({ now: new Date(Date.now() + 10 * DAY_MS) });
    await expect(issueNodeCertificate({ ca: future, operatorId: "001-01" })).rejects.toThrow(/is not valid before/);
    const node = await issueNodeCertificate({ ca: await createFederationCa(), operatorId: "001-01" });
    await expect(issueNodeCertificate({ ca: node, operatorId: "002-01" })).rejects.toThrow(/is not a CA certificate/);
  });

  it("ends no later than its CA: a 30-day CA does not issue an 825-day certificate", async () => {
    const ca = await createFederationCa({ validDays: 30 });
    const node = await issueNodeCertificate({ ca, operatorId: "001-01" });
    const [caCert, nodeCert] = [new x509.X509Certificate(ca.certPem), new x509.X509Certificate(node.certPem)];
    expect(nodeCert.notAfter.getTime()).toBe(caCert.notAfter.getTime());
    expect(nodeCert.notBefore.getTime()).toBeGreaterThanOrEqual(caCert.notBefore.getTime());
    // A long-lived CA still gives the node its own, shorter lifetime.
    const long = await issueNodeCertificate({ ca: await createFederationCa(), operatorId: "001-01", validDays: 10 });
    expect(new x509.X509Certificate(long.certPem).notAfter.getTime()).toBeLessThan(Date.now() + 11 * DAY_MS);
  });
});

describe("names in the federation's certificates", () => {
  it("a CA name with a comma and 'O=' is one CN attribute, not a second attribute", async () => {
    const ca = await createFederationCa({ name: "Evil, O=x" });
    const cert = new x509.X509Certificate(ca.certPem);
    expect(cert.subjectName.toJSON()).toEqual([{ CN: ["Evil, O=x"] }]);
    expect(cert.subjectName.getField("O")).toEqual([]);
    const node = new x509.X509Certificate((await issueNodeCertificate({ ca, operatorId: "001-01" })).certPem);
    expect(node.issuerName.toJSON()).toEqual([{ CN: ["Evil, O=x"] }]);
    expect(node.subjectName.toJSON()).toEqual([{ CN: ["twinning-node-001-01"] }]);
  });

  it("hosts are IP addresses (v4, v6) or DNS names; empty, a port or a scheme is refused by name", () => {
    expect(hostSanEntry("127.0.0.1")).toEqual({ type: "ip", value: "127.0.0.1" });
    expect(hostSanEntry("::1")).toEqual({ type: "ip", value: "::1" });
    expect(hostSanEntry("node.example.com")).toEqual({ type: "dns", value: "node.example.com" });
    expect(hostSanEntry("localhost")).toEqual({ type: "dns", value: "localhost" });
    for (const bad of ["", "node.example.com:9441", "https://node.example.com", "a..b", "-a.example", "a b", "1.2.3.4:80", "999.1.1.1", "10.0.0"]) {
      expect(() => hostSanEntry(bad)).toThrow(`host ${JSON.stringify(bad)} is neither an IP address nor a DNS name`);
    }
  });
});
