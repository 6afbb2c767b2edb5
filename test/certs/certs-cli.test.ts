import "reflect-metadata";
import { execFile } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import * as x509 from "@peculiar/x509";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = join(import.meta.dirname, "../..");
const out = mkdtempSync(join(tmpdir(), "twinning-certs-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));
const certs = (...args: string[]) => run(process.execPath, ["--import", "tsx", "certs/cli.ts", ...args], { cwd: root });

describe("certs CLI (npm run certs)", () => {
  it("creates a CA, a node certificate naming its operator in the SAN, and signing keys, without openssl", async () => {
    await certs("ca", "--out", join(out, "ca"), "--name", "Test Federation CA");
    await certs("node", "--ca", join(out, "ca"), "--operator", "002-01", "--out", join(out, "n"), "--host", "127.0.0.1", "--host", "node.op2.test");
    await certs("signing-key", "--operator", "002-01", "--out", join(out, "n"), "--alg", "EdDSA", "--kid", "op2-1");

    const ca = new x509.X509Certificate(readFileSync(join(out, "ca/ca.crt.pem"), "utf8"));
    const node = new x509.X509Certificate(readFileSync(join(out, "n/node.crt.pem"), "utf8"));
    expect(ca.subject).toBe("CN=Test Federation CA");
    expect(node.issuer).toBe(ca.subject);
    expect(await node.verify({ publicKey: ca.publicKey, signatureOnly: true })).toBe(true);
    const san = node.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.toJSON()).toEqual(
      expect.arrayContaining([
        { type: "url", value: "urn:twinning:operator:002-01" },
        { type: "ip", value: "127.0.0.1" },
        { type: "dns", value: "node.op2.test" },
      ]),
    );
    const eku = node.getExtension(x509.ExtendedKeyUsageExtension)!;
    expect(eku.usages).toEqual(expect.arrayContaining([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]));
    // Private keys are readable by their owner only.
    expect(statSync(join(out, "ca/ca.key.pem")).mode & 0o077).toBe(0);
    expect(statSync(join(out, "n/node.key.pem")).mode & 0o077).toBe(0);

    const key = JSON.parse(readFileSync(join(out, "n/signing-key.jwk.json"), "utf8"));
    const jwks = JSON.parse(readFileSync(join(out, "n/signing-jwks.json"), "utf8"));
    expect(key).toMatchObject({ kty: "OKP", crv: "Ed25519", alg: "EdDSA", kid: "op2-1" });
    expect(jwks.keys[0]).toMatchObject({ kid: "op2-1", x: key.x });
    expect(jwks.keys[0].d).toBeUndefined();
  });

  it("never overwrites a key unless told to, and a replaced key file is the owner's only", async () => {
    const dir = join(out, "again");
    await certs("signing-key", "--operator", "003-01", "--out", dir, "--kid", "op3-1");
    const first = readFileSync(join(dir, "signing-key.jwk.json"), "utf8");
    await expect(certs("signing-key", "--operator", "003-01", "--out", dir, "--kid", "op3-2")).rejects.toMatchObject({ stderr: expect.stringContaining("not overwritten") });
    expect(readFileSync(join(dir, "signing-key.jwk.json"), "utf8")).toBe(first);
    chmodSync(join(dir, "signing-key.jwk.json"), 0o644);
    await certs("signing-key", "--operator", "003-01", "--out", dir, "--kid", "op3-2", "--force");
    expect(JSON.parse(readFileSync(join(dir, "signing-key.jwk.json"), "utf8")).kid).toBe("op3-2");
    expect(statSync(join(dir, "signing-key.jwk.json")).mode & 0o077).toBe(0);
    // A symlink at the key's name is replaced, not written through.
    const elsewhere = join(out, "elsewhere.txt");
    writeFileSync(elsewhere, "not a key\n");
    rmSync(join(dir, "signing-key.jwk.json"));
    symlinkSync(elsewhere, join(dir, "signing-key.jwk.json"));
    await certs("signing-key", "--operator", "003-01", "--out", dir, "--kid", "op3-3", "--force");
    expect(readFileSync(elsewhere, "utf8")).toBe("not a key\n");
    expect(lstatSync(join(dir, "signing-key.jwk.json")).isFile()).toBe(true);
    expect(lstatSync(join(dir, "signing-key.jwk.json")).mode & 0o077).toBe(0);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("refuses a malformed operator id with a usage message", async () => {
    await expect(certs("node", "--ca", join(out, "ca"), "--operator", "12-1", "--out", join(out, "x"))).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining("MCC-MNC") });
  });

  it("refuses to sign with a CA key of another CA, and writes nothing", async () => {
    await certs("ca", "--out", join(out, "ca-a"), "--name", "CA A");
    await certs("ca", "--out", join(out, "ca-b"), "--name", "CA B");
    const mixed = join(out, "mixed");
    mkdirSync(mixed);
    copyFileSync(join(out, "ca-a/ca.crt.pem"), join(mixed, "ca.crt.pem"));
    copyFileSync(join(out, "ca-b/ca.key.pem"), join(mixed, "ca.key.pem"));
    const refused = await certs("node", "--ca", mixed, "--operator", "001-01", "--out", join(out, "mixed-node")).catch((e) => e);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("certs: the CA key does not belong to the CA certificate (CN=CA A): its public key differs\n");
    // One line, no stack trace, nothing of the key.
    expect(refused.stderr).not.toMatch(/\s+at |PRIVATE KEY/);
    expect(existsSync(join(out, "mixed-node"))).toBe(false);
  });

  it("keeps a CA name with a comma in one CN, and refuses an empty host or one with a port by name", async () => {
    await certs("ca", "--out", join(out, "evil"), "--name", "Evil, O=x");
    const ca = new x509.X509Certificate(readFileSync(join(out, "evil/ca.crt.pem"), "utf8"));
    expect(ca.subjectName.toJSON()).toEqual([{ CN: ["Evil, O=x"] }]);
    for (const host of ["", "node.example.com:9441"]) {
      const refused = await certs("node", "--ca", join(out, "evil"), "--operator", "001-01", "--out", join(out, "hosts"), "--host", host).catch((e) => e);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(`certs: --host ${JSON.stringify(host)} is neither an IP address nor a DNS name (give the name alone, without port or scheme)\n`);
    }
    expect(existsSync(join(out, "hosts"))).toBe(false);
    await certs("node", "--ca", join(out, "evil"), "--operator", "001-01", "--out", join(out, "hosts"), "--host", "::1", "--host", "node.example.com");
    const node = new x509.X509Certificate(readFileSync(join(out, "hosts/node.crt.pem"), "utf8"));
    expect(node.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()).toEqual([
      { type: "url", value: "urn:twinning:operator:001-01" },
      { type: "ip", value: "::1" },
      { type: "dns", value: "node.example.com" },
    ]);
  });
});
