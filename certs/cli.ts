import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createFederationCa, createSigningKey, hostSanEntry, issueNodeCertificate, type SigningAlgorithm } from "./federation-pki.ts";

const usage = `Usage: npm run certs -- <command> [options]

  ca           --out DIR [--name NAME]
               Creates the federation CA: DIR/ca.crt.pem, DIR/ca.key.pem (keep the key offline).
  node         --ca DIR --operator MCC-MNC --out DIR [--host H ...]
               Issues a node's TLS certificate (server + client) with urn:twinning:operator:MCC-MNC
               in the SAN: DIR/node.crt.pem, DIR/node.key.pem. Each host is an IP address or a DNS
               name (no port); hosts default to 127.0.0.1 and localhost. The CA key must match the
               CA certificate, which must be valid now; the certificate ends no later than the CA.
  signing-key  --operator MCC-MNC --out DIR [--alg ES256|EdDSA] [--kid KID]
               Creates the node's JWS signing key: DIR/signing-key.jwk.json (private) and
               DIR/signing-jwks.json (public; give it to peers or serve it).

  Files that exist are not overwritten (a key would be lost): --force replaces them.
`;

let force = false;
/** Writes all the files or none: without --force, any that exists stops the command first. */
const writeAll = (files: [file: string, text: string, mode?: number][]) => {
  const existing = force ? [] : files.filter(([file]) => existsSync(file)).map(([file]) => file);
  if (existing.length > 0) throw new Error(`${existing.join(", ")} exist: not overwritten (--force replaces them)`);
  for (const [file, text, mode = 0o644] of files) {
    // A new file with its mode from the start, then renamed over the old one: a replaced key is
    // never written into a file another can read, nor through a symlink at its name.
    const fresh = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    writeFileSync(fresh, text, { mode, flag: "wx" });
    renameSync(fresh, file);
    process.stdout.write(`wrote ${file}\n`);
  }
};

/** A --host value, refused by name unless it is an IP address or a DNS name. */
const checkedHost = (host: string): string => {
  try {
    return hostSanEntry(host).value;
  } catch (error) {
    throw new Error(`--${(error as Error).message}`);
  }
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      out: { type: "string" },
      name: { type: "string" },
      ca: { type: "string" },
      operator: { type: "string" },
      host: { type: "string", multiple: true },
      alg: { type: "string" },
      kid: { type: "string" },
      force: { type: "boolean" },
    },
    strict: true,
  });
  force = values.force === true;
  const need = (key: keyof typeof values): string => {
    const v = values[key];
    if (typeof v !== "string" || !v) throw new Error(`--${key} is required`);
    return v;
  };
  const operator = () => {
    const id = need("operator");
    if (!/^\d{3}-\d{2,3}$/.test(id)) throw new Error("--operator must be MCC-MNC, e.g. 001-01");
    return id;
  };
  switch (command) {
    case "ca": {
      const out = need("out");
      if (values.name !== undefined && values.name.trim() === "") throw new Error("--name must not be empty");
      mkdirSync(out, { recursive: true });
      const ca = await createFederationCa(values.name !== undefined ? { name: values.name } : {});
      writeAll([
        [join(out, "ca.crt.pem"), ca.certPem],
        [join(out, "ca.key.pem"), ca.keyPem, 0o600],
      ]);
      return 0;
    }
    case "node": {
      const caDir = need("ca");
      const out = need("out");
      const operatorId = operator();
      const hosts = values.host?.map(checkedHost);
      const ca = { certPem: readFileSync(join(caDir, "ca.crt.pem"), "utf8"), keyPem: readFileSync(join(caDir, "ca.key.pem"), "utf8") };
      // Issued (and so the CA pair checked) before the output directory is made: a refusal leaves nothing behind.
      const node = await issueNodeCertificate({ ca, operatorId, ...(hosts ? { hosts } : {}) });
      mkdirSync(out, { recursive: true });
      writeAll([
        [join(out, "node.crt.pem"), node.certPem],
        [join(out, "node.key.pem"), node.keyPem, 0o600],
      ]);
      return 0;
    }
    case "signing-key": {
      const out = need("out");
      const alg = (values.alg ?? "ES256") as SigningAlgorithm;
      if (alg !== "ES256" && alg !== "EdDSA") throw new Error("--alg must be ES256 or EdDSA");
      mkdirSync(out, { recursive: true });
      const key = await createSigningKey({ operatorId: operator(), alg, ...(values.kid ? { kid: values.kid } : {}) });
      writeAll([
        [join(out, "signing-key.jwk.json"), JSON.stringify(key.privateJwk, null, 2) + "\n", 0o600],
        [join(out, "signing-jwks.json"), JSON.stringify(key.jwks, null, 2) + "\n"],
      ]);
      return 0;
    }
    default:
      process.stdout.write(usage);
      return command === undefined || command === "help" || command === "--help" ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`certs: ${(error as Error).message}\n\n${usage}`);
    process.exit(2);
  },
);
