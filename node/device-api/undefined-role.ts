import type { Context } from "hono";
import { TwinningError } from "../errors/twinning-error.ts";
import type { AppEnv } from "../http/app-env.ts";
import { requireToken, subjectOf } from "../http/authenticate.ts";
import type { NodeContext } from "../service/node-context.ts";

/** A device path: its role segment, its address, and what follows the address. */
const ROLE_PATH = /^\/twinning\/v1\/([^/]+)\/([^/]+)\/(.+)$/;
/** A role route's template: what follows `{addr}`. */
const ROLE_ROUTE = /^\/twinning\/v1\/(?:primary|secondary)\/\{addr\}\/(.+)$/;

/**
 * SVC1014 (DESIGN "Errors"): a path shaped like one of the role routes (`routes`, the app's
 * OpenAPI paths) but with a role other than primary or secondary matches no route, as they are
 * registered per role, so the app's not-found answer asks here first. Authenticated as the
 * routes are (401, 403 and POL2001 come first, with either device scope), and with its address
 * checked against the token's subject as every path address is (POL2003, SVC0004), such a
 * request gets SVC1014; anything else returns, for a 404.
 */
export function undefinedRoleCheck(ctx: NodeContext, routes: readonly { method: string; path: string }[]): (c: Context<AppEnv>) => Promise<void> {
  const shapes = routes.flatMap((route) => {
    const rest = ROLE_ROUTE.exec(route.path)?.[1];
    return rest === undefined ? [] : [{ method: route.method.toUpperCase(), rest: new RegExp(`^${rest.replaceAll(/\{[^}]+\}/g, "[^/]+")}$`) }];
  });
  const auth = requireToken(ctx, ["twinning", "twinning:twin"]);
  return async (c) => {
    const [, role, address, rest] = ROLE_PATH.exec(c.req.path) ?? [];
    if (role === undefined || role === "primary" || role === "secondary") return;
    if (!shapes.some((shape) => shape.method === c.req.method && shape.rest.test(rest!))) return;
    await auth(c, async () => {
      subjectOf(c.get("principal"), decoded(address!));
      throw new TwinningError("undefined_role", { variables: [role.slice(0, 40)] });
    });
  };
}

/** A path segment, percent-decoded; one that does not decode stays as it is (and is no address). */
function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
