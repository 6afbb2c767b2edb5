import { BlockList, isIP } from "node:net";
import { z } from "zod";

/**
 * Node configuration (HLF-CM-006: service-provider policy is configuration). Every option
 * carries its unit in its name and its default here; the whole object is validated once at
 * start by {@link parseNodeConfig}, and a bad value fails with a message naming the field.
 */
/** The longest an activation code may live, here and in a peer's answer (whose copy is capped at it). */
export const MAX_CODE_TTL_SECONDS = 86_400;

const operatorId = z.string().regex(/^\d{3}-\d{2,3}$/, "must be MCC-MNC, e.g. 001-01");

const policySchema = z
  .object({
    /** Digits in an activation code (HLF-TE-005). */
    codeLength: z.number().int().min(6).max(12).default(6),
    /** How long an activation code stays redeemable (HLF-TE-005). */
    codeTtlSeconds: z.number().int().min(10).max(MAX_CODE_TTL_SECONDS).default(300),
    /** Failed redemptions a primary may make within the window before POL3004. */
    maxFailedAttemptsPerPrimary: z.number().int().min(1).max(1_000).default(5),
    /** Failed redemptions all primaries of one operator may make within the window. */
    maxFailedAttemptsPerOperator: z.number().int().min(1).max(1_000_000).default(100),
    /**
     * Failed redemptions of this node's codes within the window, whoever makes them (our
     * primaries and every peer operator together): what bounds a lucky guess, since each peer
     * also has its own per-operator budget. Default 50: at most 50 guesses per code lifetime.
     */
    maxFailedAttemptsTotal: z.number().int().min(1).max(1_000_000).default(50),
    /**
     * The per-code limit: a pending code is void once this many failed redemptions of this
     * node's codes were made since it was issued (whoever made them). With the defaults, a
     * lucky guess has at most 20 / 10^6 chance per code lifetime: 1 in 50,000.
     */
    maxFailedAttemptsPerCode: z.number().int().min(1).max(1_000_000).default(20),
    /**
     * Failed `/oauth/token` requests one client id may make within the window; then it is
     * refused (429), even with the right secret, until the oldest failure leaves the window.
     */
    maxFailedTokenRequestsPerClient: z.number().int().min(1).max(1_000).default(10),
    /** The sliding window over which failed redemptions and failed token requests are counted. */
    failedAttemptWindowSeconds: z.number().int().min(1).max(86_400).default(900),
    /**
     * Live activation codes one peer operator may hold for its secondaries (HLF-IC-003): each
     * takes a number of the code space our own subscribers' codes share. Past it, POL0001.
     */
    maxPendingCodesPerPeer: z.number().int().min(1).max(1_000_000).default(1_000),
    /** HLF-PD-006: how many secondaries one primary may have. */
    maxTwinsPerPrimary: z.number().int().min(1).max(1_000).default(10),
    /** Lifetime of a `twinning` token from /oauth/token. */
    accessTokenTtlSeconds: z.number().int().min(60).max(86_400).default(3_600),
    /** Lifetime of a `twinning:twin` token handed out at activation (dies earlier with the twin). */
    twinTokenTtlSeconds: z.number().int().min(60).max(31_536_000).default(2_592_000),
    /** Lifetime of a `primary-services` token (HLF-SD-009). */
    primaryServicesTokenTtlSeconds: z.number().int().min(60).max(86_400).default(900),
    /** Operators this node may federate with (HLF-IC-*); empty means every operator in the peer list. */
    allowedPeerOperators: z.array(operatorId).default([]),
  })
  .strict();

const limitsSchema = z
  .object({
    /** Largest request body accepted on any listener. */
    maxBodyBytes: z.number().int().min(1_024).max(1_048_576).default(16_384),
    /** Upper bound for `?wait=` on an activation code (long poll). */
    maxLongPollSeconds: z.number().int().min(0).max(120).default(30),
    /** Concurrent SSE streams one subscriber may hold. */
    maxSseConnectionsPerSubscriber: z.number().int().min(1).max(100).default(5),
    /** Callback subscriptions one subscriber may hold. */
    maxSubscriptionsPerSubscriber: z.number().int().min(1).max(1_000).default(20),
    /** Largest `duration` accepted for a subscription. */
    maxSubscriptionDurationSeconds: z.number().int().min(60).max(31_536_000).default(2_592_000),
    /** Allow callbacks to loopback, link-local and private addresses (labs, simulators); off in production. */
    allowPrivateCallbackTargets: z.boolean().default(false),
    /**
     * Credential checks (scrypt, on libuv's pool) of `/oauth/token` under way or waiting at
     * once; past it a token request is refused at once (503 with Retry-After).
     */
    maxPendingCredentialChecks: z.number().int().min(1).max(10_000).default(32),
    /** Deadline for one callback POST. */
    callbackTimeoutMs: z.number().int().min(100).max(60_000).default(5_000),
    /** How long notifications stay replayable for SSE clients (Last-Event-ID). */
    notificationRetentionSeconds: z.number().int().min(60).max(2_592_000).default(86_400),
    /** Largest request header block accepted (both listeners); larger ones get 431. */
    maxHeaderBytes: z.number().int().min(4_096).max(65_536).default(16_384),
    /** Time a client has to send its whole request (headers and body); then 408. */
    requestTimeoutMs: z.number().int().min(1_000).max(300_000).default(30_000),
    /**
     * Memory for ready answers: a repeated read (twin list, one twin, a secondary's twinning)
     * by the same token is answered from bytes kept since the last write to subscribers or
     * twins (ReadyAnswers). 0 turns it off. Only with databaseExclusiveLock.
     */
    readyAnswerBytes: z.number().int().min(0).max(1_073_741_824).default(8_388_608),
    /** Time given to in-flight requests on SIGTERM before the listener is closed hard. */
    shutdownGraceMs: z.number().int().min(0).max(120_000).default(10_000),
    /**
     * On SIGTERM, /readyz answers 503 for this long while the node goes on serving (so a load
     * balancer stops sending it requests), before the listeners close and shutdownGraceMs starts.
     */
    shutdownDrainMs: z.number().int().min(0).max(120_000).default(0),
    /**
     * /readyz answers 503 while the database's filesystem has less free space than this (a full
     * disk refuses the writes that need new space while small ones still pass). 0: not checked.
     */
    minFreeDiskBytes: z.number().int().min(0).max(1_099_511_627_776).default(67_108_864),
  })
  .strict();

const deliverySchema = z
  .object({
    /** First retry delay of the durable outbox (exponential backoff with full jitter). */
    retryBaseDelayMs: z.number().int().min(10).max(600_000).default(1_000),
    /** Largest delay between two attempts. */
    retryMaxDelayMs: z.number().int().min(100).max(86_400_000).default(300_000),
    /**
     * After this many attempts a callback becomes a dead letter (peer messages are retried until
     * acknowledged). The default, with the default delays, outlasts maxAgeSeconds: age decides.
     */
    maxAttempts: z.number().int().min(1).max(1_000).default(1_000),
    /** After this age an entry becomes a dead letter, whatever its attempts. */
    maxAgeSeconds: z.number().int().min(1).max(2_592_000).default(86_400),
    /** How long a dead letter stays for operators to inspect (`GET /admin/v1/deadLetters`), from when it died. */
    deadLetterRetentionSeconds: z.number().int().min(3_600).max(31_536_000).default(604_800),
    /** Entries delivered concurrently (one at a time per lane, so order per target holds). */
    concurrency: z.number().int().min(1).max(256).default(16),
    /**
     * Messages waiting for one peer operator, in all its lanes. At this many, toggles of twins
     * shared with that peer and activations across to it are refused (503 SVC3002, Retry-After)
     * until its backlog drains, so an outage cannot grow the outbox without bound. A deactivation
     * and the compensation of an activation already attempted are never refused (each twin has
     * at most one of each), so the backlog can pass the bound by at most that.
     */
    maxQueuedMessagesPerPeer: z.number().int().min(1).max(100_000_000).default(100_000),
  })
  .strict()
  .refine((d) => d.retryBaseDelayMs <= d.retryMaxDelayMs, { message: "retryBaseDelayMs must not exceed retryMaxDelayMs", path: ["retryBaseDelayMs"] });

/** URLs the node calls or hands out: http(s) only (a `file:` JWKS URL would fail only at the first token). */
const httpUrl = () => z.url({ protocol: /^https?$/ });

/** A listener on every interface has no address to hand out: its public URL must be set. */
const UNSPECIFIED = new BlockList();
UNSPECIFIED.addAddress("0.0.0.0", "ipv4");
UNSPECIFIED.addAddress("::", "ipv6");
UNSPECIFIED.addAddress("::ffff:0.0.0.0", "ipv6");
/** The unspecified address in any spelling (`0.0.0.0`, `::`, `[::]`, `0:0:0:0:0:0:0:0`, `::ffff:0.0.0.0`). */
export function wildcardHost(host: string): boolean {
  const address = host.replace(/^\[(.*)\]$/, "$1");
  const family = isIP(address);
  return family !== 0 && UNSPECIFIED.check(address, family === 4 ? "ipv4" : "ipv6");
}
const publicUrlWhenWildcard = (listener: { host: string; publicUrl?: string | undefined }) => !wildcardHost(listener.host) || listener.publicUrl !== undefined;
const publicUrlMessage = { message: "set publicUrl when host listens on every interface (0.0.0.0 or ::): it is the URL others call", path: ["publicUrl"] };

const federationSchema = z
  .object({
    /** The federation listener (mutual TLS), separate from the device listener. */
    host: z.string().min(1).default("127.0.0.1"),
    /** 0 lets the OS pick. */
    port: z.number().int().min(0).max(65_535).default(8443),
    /** Our federation base URL as peers call it (the `htu` they sign); https (the listener is TLS); default https://host:port. */
    publicUrl: z.url({ protocol: /^https$/ }).optional(),
    /** The federation CA (PEM) that every peer certificate must chain to. */
    caFile: z.string().min(1),
    /** This node's certificate and key (PEM), with urn:twinning:operator:<operatorId> in the SAN. */
    certFile: z.string().min(1),
    keyFile: z.string().min(1),
    /** Private JWK files of our signing keys: the first signs, all are published (rotation overlap). */
    signingKeyFiles: z.array(z.string().min(1)).min(1),
    /** JSON file `{peers:[…]}` re-read on reload (SIGHUP or POST /admin/v1/peers/reload). */
    peersFile: z.string().min(1).optional(),
    /** Deadline of one synchronous signed call to a peer. */
    callTimeoutMs: z.number().int().min(100).max(60_000).default(5_000),
    /** Clock skew tolerated on iat/exp: DESIGN's 30 s at most (peers that follow it allow no more). */
    maxClockSkewSeconds: z.number().int().min(0).max(30).default(30),
    /** Longest exp - iat accepted and used: DESIGN's 60 s at most (a longer one is refused by peers that follow it). */
    maxMessageLifetimeSeconds: z.number().int().min(1).max(60).default(60),
    /**
     * Largest signed message accepted from a peer. At least 64 KiB: a batch of 100 queued
     * messages is ~20–27 KiB of JWS, and peers send batches of 100 without knowing our limit.
     */
    maxBodyBytes: z.number().int().min(65_536).max(4_194_304).default(262_144),
  })
  .strict()
  .refine(publicUrlWhenWildcard, publicUrlMessage);

/** A fixed bearer secret of the configuration (RFC 6750 token characters, at least 24). */
/** A bearer secret an operator sets (admin, metrics): long enough, in RFC 6750's token alphabet. */
export const bearerSecret = z
  .string()
  .min(24)
  .regex(/^[A-Za-z0-9\-._~+/]+=*$/, "letters, digits and - . _ ~ + / only (a bearer token, RFC 6750)");

const configSchema = z
  .object({
    /** This node's operator, MCC-MNC. */
    operatorId: operatorId.default("001-01"),
    /** Display name returned to peers and in the OpenAPI document. */
    operatorName: z.string().min(1).max(100).optional(),
    /** Where the SQLite file, development keys and admin token live. */
    dataDir: z.string().min(1).default("./data"),
    /** SQLite file; default `<dataDir>/node-<operatorId>.sqlite`. */
    databaseFile: z.string().min(1).optional(),
    /**
     * The node holds the SQLite file's lock while it runs: no file-lock system calls per
     * transaction (faster), and no second process can open the file (another node started on
     * the same data by mistake is refused). false lets tools read the live file.
     */
    databaseExclusiveLock: z.boolean().default(true),
    /**
     * When a commit is on disk. `full` (SQLite synchronous=FULL): every commit is flushed
     * (fsync) before it is answered, so nothing answered or acknowledged to a peer is lost even
     * to an OS crash or power loss; group commit shares the flush among the toggles committed
     * together. `normal`: flushed at checkpoints only, durable across process crashes but not
     * power loss (faster on slow disks).
     */
    databaseSynchronous: z.enum(["full", "normal"]).default("full"),
    device: z
      .object({
        host: z.string().min(1).default("127.0.0.1"),
        /** 0 lets the OS pick. */
        port: z.number().int().min(0).max(65_535).default(8080),
        /** Base URL devices use (behind a gateway); default http://host:port. */
        publicUrl: httpUrl().optional(),
        tlsCertFile: z.string().min(1).optional(),
        tlsKeyFile: z.string().min(1).optional(),
      })
      .strict()
      // Half a TLS setup must not quietly serve plain HTTP.
      .refine((d) => (d.tlsCertFile === undefined) === (d.tlsKeyFile === undefined), { message: "set both tlsCertFile and tlsKeyFile, or neither", path: ["tlsKeyFile"] })
      .refine(publicUrlWhenWildcard, publicUrlMessage)
      .default({ host: "127.0.0.1", port: 8080 }),
    /** Bearer token for /admin/v1; default generated on first start into `<dataDir>/admin-token`. */
    adminToken: bearerSecret.optional(),
    /**
     * Bearer token for POST /oauth/introspect, for the operator's messaging and NMS services,
     * which then need not hold the admin token (which provisions credentials). The admin token
     * is accepted there too.
     */
    introspectionToken: bearerSecret.optional(),
    /** Bearer token for GET /metrics; unset, /metrics answers anyone who reaches the device listener. */
    metricsToken: bearerSecret.optional(),
    /** Bearer JWTs from the operator's own authorization server (DESIGN "Tokens"). */
    externalIssuer: z
      .object({ issuer: z.string().min(1), jwksUrl: httpUrl(), audience: z.string().min(1).optional() })
      .strict()
      .optional(),
    /** Service endpoints of this operator's primaries, handed out with primary-services tokens (HLF-IC-006). */
    primaryServices: z
      .object({ messagingUrl: httpUrl().optional(), nmsUrl: httpUrl().optional() })
      .strict()
      .default({}),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    policy: policySchema.default(policySchema.parse({})),
    limits: limitsSchema.default(limitsSchema.parse({})),
    delivery: deliverySchema.default(deliverySchema.parse({})),
    /** Federation with other operators (HLF-IC-*); absent: intra-operator only. */
    federation: federationSchema.optional(),
  })
  .strict();

export type NodeConfigInput = z.input<typeof configSchema>;
export type NodeConfig = z.output<typeof configSchema>;
export type Policy = NodeConfig["policy"];
export type Limits = NodeConfig["limits"];
export type DeliveryOptions = NodeConfig["delivery"];
export type FederationOptions = NonNullable<NodeConfig["federation"]>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** Validates a config object; the error names every bad field and where it came from. */
export function parseNodeConfig(input: unknown, origins: ReadonlyMap<string, string> = new Map()): NodeConfig {
  const result = configSchema.safeParse(input);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const field = issue.path.join(".") || "(root)";
    // The deepest part of the path with a known origin (an array item's is its array's).
    const origin = issue.path.map((_, i) => origins.get(issue.path.slice(0, issue.path.length - i).join("."))).find((o) => o !== undefined);
    if (origin) return `  ${field}: ${issue.message} (from ${origin})`;
    // A rule across fields (both TLS files, or neither) names the field it failed on: the
    // fields beside it that the environment set are named instead.
    const parent = issue.path.slice(0, -1).join(".");
    const beside = [...origins].filter(([path]) => path.startsWith(`${parent}.`) && path.split(".").length === issue.path.length).map(([path, from]) => `${path} from ${from}`);
    return `  ${field}: ${issue.message}${beside.length > 0 ? ` (${beside.slice(0, 3).join(", ")})` : ""}`;
  });
  // A required federation file missing: federation is on because something under it was set.
  const federationSet = [...origins].filter(([path]) => path.startsWith("federation.")).map(([path, from]) => `${path} (from ${from})`);
  if (result.error.issues.some((i) => i.path[0] === "federation" && i.code === "invalid_type") && federationSet.length > 0) {
    lines.push(`  Federation is on as soon as any federation.* field is set (here ${federationSet.slice(0, 3).join(", ")}); it then needs caFile, certFile, keyFile and signingKeyFiles.`);
  }
  throw new ConfigError(`Invalid configuration:\n${lines.join("\n")}`);
}

type Leaf = { path: string[]; type: string };

/** Walks the schema to list every settable leaf, so environment names never drift from it. */
function leaves(schema: z.ZodType, path: string[] = []): Leaf[] {
  let inner: z.ZodType = schema;
  for (;;) {
    const def = (inner as unknown as { _zod: { def: { type: string; innerType?: z.ZodType } } })._zod.def;
    if ((def.type === "optional" || def.type === "default") && def.innerType) inner = def.innerType;
    else break;
  }
  if (inner instanceof z.ZodObject) {
    return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([key, child]) => leaves(child, [...path, key]));
  }
  return [{ path, type: (inner as unknown as { _zod: { def: { type: string } } })._zod.def.type }];
}

const envName = (path: string[]): string =>
  "TWINNING_" + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("_");

/** The environment variables the node reads, e.g. TWINNING_POLICY_CODE_TTL_SECONDS. */
export const configEnvironmentVariables: readonly { name: string; field: string }[] = leaves(configSchema).map((leaf) => ({
  name: envName(leaf.path),
  field: leaf.path.join("."),
}));

/** Every TWINNING_* name the node reads: the settings, and TWINNING_CONFIG (the file). */
const KNOWN_ENVIRONMENT = new Set(["TWINNING_CONFIG", ...configEnvironmentVariables.map((v) => v.name)]);

/** What Kubernetes sets for a Service whose name starts with "twinning" (its service links). */
const SERVICE_LINK = /^TWINNING(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$/;

/**
 * TWINNING_* variables that name no setting (a typo, most likely), sorted; Kubernetes' service
 * links are not counted. The node starts without them and says so: refusing them would stop a
 * node that a platform gives variables of its own.
 */
export function unknownEnvironmentVariables(env: NodeJS.ProcessEnv): string[] {
  return Object.keys(env)
    .filter((name) => name.startsWith("TWINNING_") && !KNOWN_ENVIRONMENT.has(name) && !SERVICE_LINK.test(name))
    .sort();
}

/**
 * Merges a config file's object with the environment (environment wins), returning the raw
 * input and where each field came from for error messages.
 */
export function mergeEnvironment(
  fileInput: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): { input: Record<string, unknown>; origins: Map<string, string> } {
  const input = structuredClone(fileInput);
  const origins = new Map<string, string>();
  const refused: string[] = [];
  for (const leaf of leaves(configSchema)) {
    const name = envName(leaf.path);
    const raw = env[name];
    if (raw === undefined) continue;
    const field = leaf.path.join(".");
    const refuse = (why: string) => refused.push(`  ${field}: ${why} (from ${name})`);
    // Set but empty (an empty secret, a template's blank) is refused rather than taken as unset:
    // an empty TLS file name or metrics token would otherwise turn TLS or the guard off.
    if (raw.trim() === "") {
      refuse("set but empty: give it a value, or unset it for the file's value or the default");
      continue;
    }
    let value: unknown = raw;
    if (leaf.type === "number") {
      // Decimal only: `0x1F90`, `1e3` or `Infinity` are refused, not read as numbers.
      if (!/^-?\d+(\.\d+)?$/.test(raw.trim())) {
        refuse(`expected a decimal number, got ${JSON.stringify(raw.slice(0, 40))}`);
        continue;
      }
      value = Number(raw);
    } else if (leaf.type === "boolean") value = raw === "true" ? true : raw === "false" ? false : raw;
    else if (leaf.type === "array") {
      // A list with no item (" , ") is refused rather than read as empty, which can mean "all".
      const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
      if (items.length === 0) {
        refuse("a comma-separated list with no item (unset it for the default)");
        continue;
      }
      value = items;
    }
    let target: Record<string, unknown> = input;
    for (const key of leaf.path.slice(0, -1)) {
      const next = target[key];
      if (typeof next !== "object" || next === null) target[key] = {};
      target = target[key] as Record<string, unknown>;
    }
    target[leaf.path[leaf.path.length - 1]!] = value;
    origins.set(field, name);
  }
  if (refused.length > 0) throw new ConfigError(`Invalid configuration:\n${refused.join("\n")}`);
  return { input, origins };
}
