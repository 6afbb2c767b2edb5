import type { RouteConfig } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { z } from "zod";
import { TwinningError } from "../errors/twinning-error.ts";
import type { AppEnv } from "./app-env.ts";
import { JSON_MEDIA_TYPE } from "./body-limit.ts";

/**
 * A Content-Type a JSON body route accepts: `application/json` or `application/…+json`, with
 * any parameters (RFC 9110 §8.3.1: `*( OWS ";" OWS [ name=value ] )`, so `application/json ;
 * charset=utf-8` and a trailing `;` too).
 */
export const JSON_REQUEST = /^application\/([a-z-.]+\+)?json[ \t]*(;[ \t]*([!#$%&'*+.^_`|~0-9a-z-]+=("[^"]*"|[!#$%&'*+.^_`|~0-9a-z-]+)[ \t]*)?)*$/i;
const IS_JSON = /^application\/([a-z-.]+\+)?json/i;

type Request = NonNullable<RouteConfig["request"]>;

/**
 * A route's declared query, path parameters and JSON body, checked in one step before its
 * handler: what @hono/zod-openapi does with one validator middleware per part (each an async
 * hop, each an async parse), with the same rules and order (query, parameters, media type,
 * body), synchronous schemas, and every failure answered SVC0002 naming the first bad field.
 * Validated parts are read as usual (`c.req.valid(…)`, validBody).
 */
export function requestCheck(request: Request | undefined): ((c: Context<AppEnv>) => Promise<void>) | undefined {
  const query = request?.query as z.ZodType | undefined;
  const params = request?.params as z.ZodType | undefined;
  const content = request?.body?.content as Record<string, { schema?: unknown }> | undefined;
  const types = Object.keys(content ?? {});
  if (types.some((t) => t !== "application/json")) throw new Error(`requestCheck takes JSON bodies only, not ${types.join(", ")}`);
  const json = content?.["application/json"]?.schema as z.ZodType | undefined;
  const required = request?.body?.required === true;
  if (!query && !params && !json) return undefined;
  return async (c) => {
    const valid = c.req as unknown as { addValidatedData(target: string, data: unknown): void };
    if (query) valid.addValidatedData("query", parsed(query, queryOf(c)));
    if (params) valid.addValidatedData("param", parsed(params, c.req.param()));
    if (json) {
      const type = c.req.header("content-type");
      const empty = (await c.req.text()).length === 0;
      if (type ? !JSON_REQUEST.test(type) : !empty) throw new TwinningError("invalid_input", { variables: ["Content-Type"] });
      // A body the route does not require may be left out, whatever Content-Type is sent.
      const leftOut = !required && empty;
      valid.addValidatedData("json", !leftOut && (required || (type !== undefined && IS_JSON.test(type))) ? parsed(json, await bodyOf(c, type)) : {});
    }
  };
}

/** The schema's output, or SVC0002 naming the first bad field (DESIGN "Errors"). */
export function parsed(schema: z.ZodType, value: unknown): unknown {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : "body";
  throw new TwinningError("invalid_input", { variables: [field], detail: issue?.message });
}

/** Query parameters as hono's validator gives them: one value, or an array when repeated. */
function queryOf(c: Context<AppEnv>): Record<string, string | string[]> {
  return Object.fromEntries(Object.entries(c.req.queries()).map(([k, v]) => [k, v.length === 1 ? v[0]! : v]));
}

async function bodyOf(c: Context<AppEnv>, type: string | undefined): Promise<unknown> {
  // Parsed as JSON only for a JSON media type (as hono's validator); any other body validates as `{}`.
  if (!JSON_MEDIA_TYPE.test(type ? type.split(";")[0]!.trim() : "")) return {};
  try {
    return await c.req.json();
  } catch {
    throw malformedJson();
  }
}

/** A JSON body's value, or SVC0002 naming the body. */
export function jsonText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw malformedJson();
  }
}

const malformedJson = () => new TwinningError("invalid_input", { variables: ["body"], detail: "Malformed JSON in request body" });
