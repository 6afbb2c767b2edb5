import type { Context, MiddlewareHandler } from "hono";
import { parseAddress } from "../domain/address.ts";
import { TwinningError } from "../errors/twinning-error.ts";
import type { NodeContext } from "../service/node-context.ts";
import { provisioningStamp, secretsEqual } from "../tokens/credentials.ts";
import type { Principal, Scope } from "../tokens/scopes.ts";
import type { AppEnv } from "./app-env.ts";

const BEARER = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i; // RFC 7235: the scheme is case-insensitive

export function bearerToken(header: string | undefined): string {
  const match = header ? BEARER.exec(header) : null;
  if (!match?.[1]) throw new TwinningError("invalid_token", { detail: "no bearer token" });
  return match[1];
}

/**
 * Twin-scoped and primary-services tokens die with their twin (HLF-TE-004, HLF-SD-007), and
 * every token dies with its subscriber's provisioning: checked on every use, not at expiry.
 */
export async function assertNotRevoked(ctx: NodeContext, principal: Principal): Promise<void> {
  if (principal.scope === "twinning") return;
  const twin = principal.twinId ? await ctx.store.getTwin(principal.twinId) : undefined;
  const parties = principal.scope === "primary-services" ? [twin?.primaryAddress] : [twin?.primaryAddress, twin?.secondaryAddress];
  if (!twin?.active || !parties.includes(principal.subject)) throw new TwinningError("invalid_token", { detail: "twin deactivated or not the token's" });
  if (principal.scope !== "primary-services") return;
  // HLF-SD-009: the secondary uses the primary's services while twinning is On, and while it is
  // itself provisioned, under the provisioning whose token opened this one (checked here when
  // this node serves it: a new credential ends what the old one opened).
  if (twin.status !== "On" || principal.actor !== twin.secondaryAddress) throw new TwinningError("invalid_token", { detail: "twinning is Off or the token's actor is not the twin's secondary" });
  if (twin.secondaryOperatorId !== ctx.config.operatorId) return;
  const secondary = await ctx.store.getSubscriber(twin.secondaryAddress);
  if (!secondary?.twinningEnabled || principal.actorProvisioning !== provisioningStamp(secondary)) {
    throw new TwinningError("invalid_token", { detail: "the secondary is no longer provisioned as it was" });
  }
}

/**
 * The token's subject is provisioned for twinning here, under the provisioning the token was
 * minted under: a de-provisioned and re-provisioned subscriber, or one whose credential was
 * changed, starts afresh. (Tokens of the operator's external issuer carry no stamp: that issuer
 * answers for them.)
 */
export async function assertProvisioned(ctx: NodeContext, principal: Principal): Promise<void> {
  const subscriber = await ctx.store.getSubscriber(principal.subject);
  if (!subscriber?.twinningEnabled) throw new TwinningError("not_provisioned");
  if (principal.source === "local" && principal.provisioning !== provisioningStamp(subscriber)) {
    throw new TwinningError("invalid_token", { detail: "issued under an earlier provisioning" });
  }
}

/** The principal of an Authorization header: verified, in scope, not revoked, provisioned (HLF-CM-006, OAU-001/002). */
export async function authenticate(ctx: NodeContext, authorization: string | undefined, scopes: readonly Scope[]): Promise<Principal> {
  const principal = await ctx.tokens.verify(bearerToken(authorization));
  if (!scopes.includes(principal.scope)) throw new TwinningError("access_denied", { variables: ["the token's scope does not allow this operation"] });
  await assertNotRevoked(ctx, principal);
  await assertProvisioned(ctx, principal);
  return principal;
}

/** Authenticates (see authenticate); sets `principal`. */
export function requireToken(ctx: NodeContext, scopes: readonly Scope[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("principal", await authenticate(ctx, c.req.header("authorization"), scopes));
    await next();
  };
}

/**
 * A guard for routes behind fixed bearer secrets of the operator's, each compared in constant
 * time (all of them, whichever matches).
 */
function requireSecret(secrets: () => readonly string[], detail: string): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const presented = bearerToken(c.req.header("authorization"));
    const matches = secrets().map((secret) => secretsEqual(presented, secret));
    if (!matches.includes(true)) throw new TwinningError("invalid_token", { detail });
    await next();
  };
}

/** Admin API guard: the operator's admin token. */
export function requireAdmin(ctx: NodeContext): MiddlewareHandler<AppEnv> {
  return requireSecret(() => [ctx.adminToken], "not the admin token");
}

/** /oauth/introspect guard: the introspection token when one is configured, or the admin token. */
export function requireIntrospectionToken(ctx: NodeContext): MiddlewareHandler<AppEnv> {
  const token = ctx.config.introspectionToken;
  return requireSecret(() => (token === undefined ? [ctx.adminToken] : [token, ctx.adminToken]), "not the introspection or admin token");
}

/** /metrics guard: the metrics token when one is configured, else none. */
export function requireMetricsToken(ctx: NodeContext): MiddlewareHandler<AppEnv> {
  const token = ctx.config.metricsToken;
  if (token === undefined) return async (_c, next) => next();
  return requireSecret(() => [token], "not the metrics token");
}

/**
 * The path's address must be the token's subject; `acr:Authorization` stands for it
 * (DESIGN "Device API"). Malformed addresses get SVC0004, someone else's POL2003.
 */
export function pathSubject(c: Context<AppEnv>): string {
  return subjectOf(c.get("principal"), c.req.param("addr") ?? "");
}

/** The address a path names (`raw`, decoded), checked against the token's subject (see pathSubject). */
export function subjectOf(principal: Principal, raw: string): string {
  if (raw === "acr:Authorization") return principal.subject;
  const address = parseAddress(raw, "address");
  if (address !== principal.subject) throw new TwinningError("access_denied", { variables: ["the address is not the token's subject"] });
  return address;
}
