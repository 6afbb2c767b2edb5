import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeviceApp } from "../../node/http/create-app.ts";
import { eventually, Federation, type FederatedOperator } from "../helpers/federation-fixture.ts";
import { SseClient } from "../helpers/sse-client.ts";
import { Api, enc, messageId, newAddress, startTestNode, type ApiResponse, type TestNode } from "../helpers/test-node.ts";

/**
 * The OpenAPI document at /twinning/v1/openapi.json against the node that serves it: real
 * requests, each answer checked against the schema the document gives for its operation and
 * status, so the test fails when the document and the server disagree.
 */

type Schema = Record<string, any>;
type Doc = {
  openapi: string;
  paths: Record<string, Record<string, any>>;
  webhooks?: Record<string, Record<string, any>>;
  components: { schemas: Record<string, Schema>; pathItems?: Record<string, Record<string, any>> };
};

// ---- a compact JSON Schema checker (the keywords the document uses; an unknown one fails) ----

const ANNOTATIONS = new Set(["description", "example", "examples", "title", "default", "deprecated", "readOnly", "writeOnly", "$schema"]);
const KEYWORDS = new Set([
  "$ref", "type", "properties", "required", "additionalProperties", "items", "enum", "const", "pattern", "format",
  "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
  "allOf", "anyOf", "oneOf", "nullable", "contentMediaType", "contentSchema",
]);
const FORMATS: Record<string, (v: string) => boolean> = {
  "date-time": (v) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) && !Number.isNaN(Date.parse(v)),
  uri: (v) => URL.canParse(v),
  uuid: (v) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v),
};

function resolve(doc: Doc, schema: Schema): Schema {
  let s = schema;
  for (let hops = 0; s.$ref !== undefined; hops++) {
    if (hops > 20 || !String(s.$ref).startsWith("#/")) throw new Error(`unresolvable $ref ${s.$ref}`);
    const target = String(s.$ref).slice(2).split("/").reduce<any>((node, key) => node?.[key.replaceAll("~1", "/").replaceAll("~0", "~")], doc);
    if (!target) throw new Error(`dangling $ref ${s.$ref}`);
    const { $ref: _, ...siblings } = s;
    s = { ...target, ...siblings };
  }
  return s;
}

/** The property names a schema declares, through $ref and allOf (for the closed check of allOf branches). */
function declared(doc: Doc, schema: Schema): Set<string> {
  const s = resolve(doc, schema);
  const names = new Set(Object.keys(s.properties ?? {}));
  for (const part of s.allOf ?? []) for (const n of declared(doc, part)) names.add(n);
  return names;
}

const typeOf = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "array" : Number.isInteger(v) ? "integer" : typeof v);

/**
 * Errors of `value` against `schema` (empty: valid). `closed`: an object's keys must be declared
 * by its schema (an `additionalProperties: {}` does not declare them): the document must name
 * what the server sends, not just allow it.
 */
function check(doc: Doc, schema: Schema, value: unknown, closed: boolean, at = "$", alsoDeclared: ReadonlySet<string> = new Set()): string[] {
  const s = resolve(doc, schema);
  const errors: string[] = [];
  for (const key of Object.keys(s)) if (!KEYWORDS.has(key) && !ANNOTATIONS.has(key) && !key.startsWith("x-")) errors.push(`${at}: the checker does not know keyword ${key}`);
  if (value === null && s.nullable === true) return errors;
  const types: string[] | undefined = s.type === undefined ? undefined : Array.isArray(s.type) ? s.type : [s.type];
  const actual = typeOf(value);
  if (types && !types.some((t) => t === actual || (t === "number" && actual === "integer"))) return [...errors, `${at}: ${actual}, expected ${types.join("|")}`];
  if (s.enum && !s.enum.some((e: unknown) => e === value)) errors.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(s.enum)}`);
  if ("const" in s && s.const !== value) errors.push(`${at}: ${JSON.stringify(value)} is not ${JSON.stringify(s.const)}`);
  if (typeof value === "string") {
    if (s.pattern !== undefined && !new RegExp(s.pattern, "u").test(value)) errors.push(`${at}: ${JSON.stringify(value)} does not match ${s.pattern}`);
    if (s.format !== undefined && FORMATS[s.format] && !FORMATS[s.format]!(value)) errors.push(`${at}: ${JSON.stringify(value)} is not a ${s.format}`);
    if (s.minLength !== undefined && value.length < s.minLength) errors.push(`${at}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && value.length > s.maxLength) errors.push(`${at}: longer than ${s.maxLength}`);
    if (s.contentMediaType === "application/json" && s.contentSchema) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(value);
      } catch {
        errors.push(`${at}: not JSON`);
      }
      if (parsed !== undefined) errors.push(...check(doc, s.contentSchema, parsed, closed, `${at}<json>`));
    }
  }
  if (typeof value === "number") {
    if (s.minimum !== undefined && value < s.minimum) errors.push(`${at}: below ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) errors.push(`${at}: above ${s.maximum}`);
  }
  if (Array.isArray(value)) {
    if (s.items) value.forEach((item, i) => errors.push(...check(doc, s.items, item, closed, `${at}[${i}]`)));
    if (s.minItems !== undefined && value.length < s.minItems) errors.push(`${at}: fewer than ${s.minItems} items`);
  }
  // allOf branches see each other's properties as declared.
  const siblings = new Set([...alsoDeclared, ...declared(doc, s)]);
  if (actual === "object") {
    const object = value as Record<string, unknown>;
    for (const name of s.required ?? []) if (!(name in object)) errors.push(`${at}: missing ${name}`);
    for (const [name, v] of Object.entries(object)) {
      const property = s.properties?.[name];
      if (property) errors.push(...check(doc, property, v, closed, `${at}.${name}`));
      else if (s.additionalProperties === false) errors.push(`${at}.${name}: not allowed`);
      else if (typeof s.additionalProperties === "object" && Object.keys(s.additionalProperties).length > 0) errors.push(...check(doc, s.additionalProperties, v, closed, `${at}.${name}`));
      else if (closed && (s.properties || s.additionalProperties !== undefined || s.type === "object") && !siblings.has(name)) errors.push(`${at}.${name}: sent but not in the document`);
    }
  }
  for (const part of s.allOf ?? []) errors.push(...check(doc, part, value, closed, at, siblings));
  for (const [keyword, wanted] of [["anyOf", (n: number) => n >= 1], ["oneOf", (n: number) => n === 1]] as const) {
    if (!s[keyword]) continue;
    const results = (s[keyword] as Schema[]).map((option) => check(doc, option, value, closed, at, alsoDeclared));
    const matches = results.filter((r) => r.length === 0).length;
    if (!wanted(matches)) errors.push(`${at}: ${matches} of the ${keyword} options match (${results.map((r) => r[0]).join("; ")})`);
  }
  return errors;
}

// ---- the node, its document, and documented requests ----

let t: TestNode;
let api: Api;
let doc: Doc;
beforeAll(async () => {
  t = await startTestNode();
  api = new Api(t.url);
  doc = (await (await fetch(`${t.url}/twinning/v1/openapi.json`)).json()) as Doc;
});
afterAll(async () => t?.cleanup());

/** The schema the document gives for an answer (an operation object, a status, a media type). */
function answerSchema(operation: any, status: number, where: string, mediaType = "application/json"): Schema {
  const response = operation?.responses?.[String(status)] ?? operation?.responses?.[`${String(status)[0]}XX`];
  expect(response, `${where}: no documented ${status} answer`).toBeDefined();
  const schema = response.content?.[mediaType]?.schema;
  expect(schema, `${where} ${status}: no ${mediaType} schema`).toBeDefined();
  return schema;
}

function expectValid(schema: Schema, value: unknown, where: string, closed = true): void {
  const errors = check(doc, schema, value, closed);
  expect(errors, `${where}: ${JSON.stringify(value)?.slice(0, 600)}`).toEqual([]);
}

/** A path template with its parameters filled in (each encoded). */
const fill = (template: string, params: Record<string, string>) => template.replaceAll(/\{(\w+)\}/g, (_, name: string) => enc(params[name]!));

/** Calls a device route by its documented path and checks the answer against the document for its status. */
async function documented(
  method: string,
  template: string,
  params: Record<string, string>,
  options: { token?: string; body?: unknown; query?: string; via?: Api } = {},
): Promise<ApiResponse> {
  const operation = doc.paths[template]?.[method.toLowerCase()];
  expect(operation, `${method} ${template} is not in the document`).toBeDefined();
  const res = await (options.via ?? api).call(method, `${fill(template, params)}${options.query ?? ""}`, { token: options.token, body: options.body });
  const where = `${method} ${template} → ${res.status}`;
  if (res.status === 204) {
    expect(operation.responses["204"], `${where}: not documented`).toBeDefined();
    expect(res.body).toBeUndefined();
    return res;
  }
  expectValid(answerSchema(operation, res.status, where), res.body, where);
  if (res.status >= 400) {
    const description: string = operation.responses[String(res.status)].description;
    expect(description, `${where}: the description names the messageId`).toContain(messageId(res.body)!);
  }
  return res;
}

/** A route around the device API, as components.pathItems describes it (by its x-path). */
function around(path: string, method: string): any {
  const item = Object.values(doc.components.pathItems ?? {}).find((i) => i["x-path"] === path);
  expect(item, `${path} is not in components.pathItems`).toBeDefined();
  const operation = item![method];
  expect(operation, `${method.toUpperCase()} ${path} is not described`).toBeDefined();
  return operation;
}

async function subscriber(): Promise<{ address: string; token: string; credential: string }> {
  const address = newAddress();
  const credential = await api.provision(t.node.adminToken, address);
  return { address, credential, token: await api.token(address, credential) };
}

/** A callback receiver that keeps each request's headers and body. */
async function receiver(): Promise<{ url: string; received: { headers: IncomingHttpHeaders; body: any }[]; server: Server }> {
  const received: { headers: IncomingHttpHeaders; body: any }[] = [];
  const server = createServer((req, res) => {
    let data = "";
    req.on("data", (chunk) => (data += chunk));
    req.on("end", () => {
      received.push({ headers: req.headers, body: JSON.parse(data) });
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/notify`, received, server };
}

async function until<T>(what: () => T | undefined, label: string, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = what();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SECONDARY = "/twinning/v1/secondary/{addr}";
const PRIMARY = "/twinning/v1/primary/{addr}";

describe("the OpenAPI document", () => {
  it("is OpenAPI 3.1 with every path and method the device routes serve", () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    // The routes of an app built as the node builds its own (path parameters as `{name}`).
    const served = createDeviceApp(t.node.context)
      .routes.filter((r) => r.method !== "ALL" && r.path.startsWith("/twinning/v1/") && !["/twinning/v1/openapi.json", "/twinning/v1/docs"].includes(r.path))
      .map((r) => `${r.method.toLowerCase()} ${r.path.replaceAll(/:(\w+)/g, "{$1}")}`);
    expect(served.length).toBeGreaterThanOrEqual(24);
    const documentedRoutes = new Set(Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m} ${path}`)));
    expect(served.filter((r) => !documentedRoutes.has(r))).toEqual([]);
    expect([...documentedRoutes]).toEqual(
      expect.arrayContaining([
        `post ${SECONDARY}/activationCodes`,
        `get ${SECONDARY}/activationCodes/{codeId}`,
        `get ${SECONDARY}/twinning`,
        `put ${SECONDARY}/twinning/status`,
        `delete ${SECONDARY}/twinning`,
        `post ${SECONDARY}/twinning/primaryServicesToken`,
        `post ${PRIMARY}/twins`,
        `get ${PRIMARY}/twins`,
        `get ${PRIMARY}/twins/{ref}`,
        `patch ${PRIMARY}/twins/{ref}`,
        `delete ${PRIMARY}/twins/{ref}`,
        `put ${PRIMARY}/twins/{ref}/status`,
        ...["primary", "secondary"].flatMap((role) => [
          `post /twinning/v1/${role}/{addr}/subscriptions`,
          `get /twinning/v1/${role}/{addr}/subscriptions`,
          `get /twinning/v1/${role}/{addr}/subscriptions/{id}`,
          `delete /twinning/v1/${role}/{addr}/subscriptions/{id}`,
          `get /twinning/v1/${role}/{addr}/notifications`,
        ]),
      ]),
    );
  });

  it("carries the twin-name pattern as a regex source that compiles with the u flag and accepts and refuses as the server does", () => {
    const name = doc.paths[`${PRIMARY}/twins`]!.post.requestBody.content["application/json"].schema.properties.name;
    const rename = doc.paths[`${PRIMARY}/twins/{ref}`]!.patch.requestBody.content["application/json"].schema.properties.name;
    expect(rename.pattern).toBe(name.pattern);
    expect(name.pattern).not.toMatch(/\/[a-z]*$/);
    const pattern = new RegExp(name.pattern, "u");
    for (const ok of ["my watch", "Car 2", "twin-1", "Ωmega_3", "O'Brien.car"]) expect(pattern.test(ok), ok).toBe(true);
    for (const bad of ["tel:+1", "", " leading space", "-dash", "x".repeat(65)]) expect(pattern.test(bad), bad).toBe(false);
  });

  it("documents a success schema for every device operation (no empty passthrough objects), and error answers with the OMA body naming their messageIds", () => {
    for (const [path, methods] of Object.entries(doc.paths).filter(([p]) => p.startsWith("/twinning/v1/"))) {
      for (const [method, operation] of Object.entries(methods)) {
        const where = `${method.toUpperCase()} ${path}`;
        const success = Object.keys(operation.responses).filter((s) => s.startsWith("2"));
        expect(success.length, where).toBe(1);
        if (success[0] !== "204") {
          const [mediaType, content] = Object.entries(operation.responses[success[0]!].content as Record<string, { schema: Schema }>)[0]!;
          if (mediaType === "application/json") {
            const schema = resolve(doc, content.schema);
            expect(Object.keys(schema.properties ?? {}).length, `${where}: an empty success schema`).toBeGreaterThan(0);
            expect(schema.additionalProperties, `${where}: a passthrough success schema`).toBeUndefined();
          }
        }
        for (const [status, response] of Object.entries(operation.responses as Record<string, any>).filter(([s]) => Number(s) >= 400)) {
          expect(response.content["application/json"].schema, `${where} ${status}`).toEqual({ $ref: "#/components/schemas/RequestError" });
          expect(response.description, `${where} ${status}`).toMatch(/\b(SVC|POL)\d{4}\b/);
        }
        for (const status of ["400", "401", "403", "404", "408", "431", "500"]) expect(operation.responses[status], `${where} ${status}`).toBeDefined();
        if (["post", "put", "patch"].includes(method)) expect(operation.responses["413"], `${where} 413`).toBeDefined();
      }
    }
    const activation = doc.paths[`${PRIMARY}/twins`]!.post.responses;
    expect(activation["409"].description).toMatch(/SVC0005.*POL3001/);
    expect(activation["429"].description).toContain("POL3004");
    expect(activation["429"].headers["Retry-After"]).toBeDefined();
    expect(activation["503"].description).toContain("SVC3002");
    expect(doc.paths[`${SECONDARY}/activationCodes`]!.post.responses["409"].description).toMatch(/SVC0005.*POL3001/);
    expect(doc.paths[`${SECONDARY}/twinning/primaryServicesToken`]!.post.responses["503"].description).toContain("SVC3002");
    expect(doc.paths["/twinning/v1/primary/{addr}/subscriptions"]!.post.responses["409"].description).toContain("SVC0005");
    // Where nothing can conflict, no 409 is claimed.
    expect(doc.paths[`${PRIMARY}/twins/{ref}`]!.get.responses["409"]).toBeUndefined();
  });

  it("documents a closed, non-empty success schema for every admin operation (no passthrough objects)", () => {
    const admin = Object.entries(doc.paths).filter(([p]) => p.startsWith("/admin/v1/"));
    expect(admin.map(([p]) => p)).toEqual(expect.arrayContaining(["/admin/v1/subscribers/{addr}", "/admin/v1/peers/reload", "/admin/v1/twins", "/admin/v1/deadLetters"]));
    for (const [path, methods] of admin) {
      for (const [method, operation] of Object.entries(methods)) {
        const where = `${method.toUpperCase()} ${path}`;
        for (const status of Object.keys(operation.responses).filter((s) => s.startsWith("2") && s !== "204")) {
          const check = (schema: Schema, at: string) => {
            const s = resolve(doc, schema);
            expect(Object.keys(s.properties ?? {}).length, `${at}: an empty schema`).toBeGreaterThan(0);
            expect(s.additionalProperties, `${at}: a passthrough schema`).toBeUndefined();
            for (const [name, property] of Object.entries(s.properties as Record<string, Schema>)) {
              const p = resolve(doc, property);
              if (p.type === "object") check(p, `${at}.${name}`);
              if (p.type === "array" && resolve(doc, p.items).type === "object") check(p.items, `${at}.${name}[]`);
            }
          };
          check(answerSchema(operation, Number(status), where), `${where} ${status}`);
        }
      }
    }
  });

  it("describes the three notification bodies, the callback as a webhook (and as the subscription's callback), and the event stream's data", () => {
    const schemas = doc.components.schemas;
    for (const [type, component] of [
      ["twinningStatusNotification", "TwinningStatusNotification"],
      ["twinningActivatedNotification", "TwinningActivatedNotification"],
      ["twinningDeactivatedNotification", "TwinningDeactivatedNotification"],
    ] as const) {
      expect(schemas[component]!.required).toEqual([type]);
      expect(schemas[component]!.properties[type]).toEqual({ $ref: "#/components/schemas/TwinningNotification" });
    }
    const content = schemas.TwinningNotification!;
    expect(Object.keys(content.properties).sort()).toEqual(["callbackData", "changedBy", "primaryAddress", "secondaryAddress", "status", "timestamp", "twinId"]);
    expect(content.required.sort()).toEqual(["changedBy", "primaryAddress", "secondaryAddress", "status", "timestamp", "twinId"]);
    expect(content.properties.changedBy.enum).toEqual(["primary", "secondary"]);
    const hook = doc.webhooks?.twinningNotification?.post;
    expect(hook.requestBody.content["application/json"].schema).toEqual({ $ref: "#/components/schemas/TwinningNotificationBody" });
    expect(hook.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: "X-Notification-Delivery-Id", in: "header" })]));
    const callback = doc.paths["/twinning/v1/secondary/{addr}/subscriptions"]!.post.callbacks.twinningNotification["{$request.body#/callbackReference/notifyURL}"].post;
    expect(callback.requestBody.content["application/json"].schema).toEqual({ $ref: "#/components/schemas/TwinningNotificationBody" });
    const stream = doc.paths["/twinning/v1/secondary/{addr}/notifications"]!.get.responses["200"];
    expect(stream.description).toContain("TwinningNotificationBody");
    expect(stream.content["text/event-stream"]["x-itemSchema"].properties.data.contentSchema).toEqual({ $ref: "#/components/schemas/TwinningNotificationBody" });
  });
});

describe("the document against the server's real answers", () => {
  it("every answer of an activation, reads, toggles, subscriptions and a primary-services token matches the schema for its operation and status", async () => {
    const [p, s] = [await subscriber(), await subscriber()];
    const P = { addr: p.address };
    const S = { addr: s.address };

    const issued = await documented("POST", `${SECONDARY}/activationCodes`, S, { token: s.token, body: { clientCorrelator: "code-1" } });
    expect(issued.status).toBe(201);
    expect(issued.body.activationCode.code).toMatch(/^\d+$/);
    const codeId = new URL(issued.body.activationCode.resourceURL).pathname.split("/").pop()!;
    const pending = await documented("GET", `${SECONDARY}/activationCodes/{codeId}`, { ...S, codeId }, { token: s.token });
    expect(pending.body.activationCode.status).toBe("Pending");

    const activated = await documented("POST", `${PRIMARY}/twins`, P, {
      token: p.token,
      body: { activationCode: issued.body.activationCode.code, operatorId: issued.body.activationCode.operatorId, name: "my watch", clientCorrelator: "act-1" },
    });
    expect(activated.status).toBe(201);
    expect(activated.body.twin.accessToken).toEqual(expect.any(String));
    const twinId: string = activated.body.twin.twinId;

    const used = await documented("GET", `${SECONDARY}/activationCodes/{codeId}`, { ...S, codeId }, { token: s.token, query: "?wait=0" });
    expect(used.body.activationCode).toMatchObject({ status: "Used", twin: { twinId }, accessToken: expect.any(String) });

    const twinning = await documented("GET", `${SECONDARY}/twinning`, S, { token: s.token });
    expect(twinning.body.twinning).toMatchObject({ twinId, primaryAddress: p.address, status: "On", name: "my watch" });
    // The secondary's twin-scoped token reads it too.
    expect((await documented("GET", `${SECONDARY}/twinning`, S, { token: used.body.activationCode.accessToken })).status).toBe(200);

    const off = await documented("PUT", `${SECONDARY}/twinning/status`, S, { token: s.token, body: { status: "Off" } });
    expect(off.body.twinning.status).toBe("Off");
    const on = await documented("PUT", `${PRIMARY}/twins/{ref}/status`, { ...P, ref: twinId }, { token: p.token, body: { status: "On" } });
    expect(on.body.twin.status).toBe("On");

    expect((await documented("GET", `${PRIMARY}/twins`, P, { token: p.token })).body.twinList.twin).toHaveLength(1);
    expect((await documented("GET", `${PRIMARY}/twins/{ref}`, { ...P, ref: "my watch" }, { token: p.token })).body.twin.twinId).toBe(twinId);
    expect((await documented("PATCH", `${PRIMARY}/twins/{ref}`, { ...P, ref: twinId }, { token: p.token, body: { name: "Car 2" } })).body.twin.name).toBe("Car 2");

    const token = await documented("POST", `${SECONDARY}/twinning/primaryServicesToken`, S, { token: s.token });
    expect(token.status).toBe(200);
    expect(token.body.primaryServices.endpoints).toEqual({ messaging: expect.any(String), nms: expect.any(String) });
    expect((await documented("DELETE", `${PRIMARY}/twins/{ref}`, { ...P, ref: twinId }, { token: p.token })).status).toBe(204);

    for (const [role, who] of [["primary", p], ["secondary", s]] as const) {
      const base = `/twinning/v1/${role}/{addr}/subscriptions`;
      const at = { addr: who.address };
      const created = await documented("POST", base, at, {
        token: who.token,
        body: { callbackReference: { notifyURL: "http://127.0.0.1:9/notify", callbackData: `data-${role}` }, duration: 600, clientCorrelator: `sub-${role}` },
      });
      expect(created.status).toBe(201);
      expect(created.body.subscription).toMatchObject({ clientCorrelator: `sub-${role}`, callbackReference: { callbackData: `data-${role}` } });
      const id = new URL(created.body.subscription.resourceURL).pathname.split("/").pop()!;
      // Without callbackData and duration, too.
      expect((await documented("POST", base, at, { token: who.token, body: { callbackReference: { notifyURL: "http://127.0.0.1:9/other" } } })).status).toBe(201);
      expect((await documented("GET", base, at, { token: who.token })).body.subscriptionList.subscription).toHaveLength(2);
      expect((await documented("GET", `${base}/{id}`, { ...at, id }, { token: who.token })).status).toBe(200);
      expect((await documented("DELETE", `${base}/{id}`, { ...at, id }, { token: who.token })).status).toBe(204);
    }
  });

  it("error answers (409 SVC0005 and POL3001, 404, 401, 400, 403) match the error schema documented for their status", async () => {
    const [p, s, other] = [await subscriber(), await subscriber(), await subscriber()];
    const base = "/twinning/v1/primary/{addr}/subscriptions";
    const body = (notifyURL: string) => ({ callbackReference: { notifyURL }, clientCorrelator: "same" });
    expect((await documented("POST", base, { addr: p.address }, { token: p.token, body: body("http://127.0.0.1:9/a") })).status).toBe(201);
    const conflict = await documented("POST", base, { addr: p.address }, { token: p.token, body: body("http://127.0.0.1:9/b") });
    expect([conflict.status, messageId(conflict.body)]).toEqual([409, "SVC0005"]);

    const missing = await documented("GET", `${base}/{id}`, { addr: p.address, id: "no-such-subscription" }, { token: p.token });
    expect([missing.status, messageId(missing.body)]).toEqual([404, "SVC0002"]);
    const noToken = await documented("GET", base, { addr: p.address });
    expect([noToken.status, messageId(noToken.body)]).toEqual([401, "SVC2003"]);
    const badName = await documented("PATCH", `${PRIMARY}/twins/{ref}`, { addr: p.address, ref: "x" }, { token: p.token, body: { name: "tel:+1" } });
    expect([badName.status, messageId(badName.body)]).toEqual([400, "SVC0002"]);
    const notYours = await documented("GET", base, { addr: other.address }, { token: p.token });
    expect([notYours.status, messageId(notYours.body)]).toEqual([403, "POL2003"]);

    await api.twin(p, s);
    const twinned = await documented("POST", `${SECONDARY}/activationCodes`, { addr: s.address }, { token: s.token, body: {} });
    expect([twinned.status, messageId(twinned.body)]).toEqual([409, "POL3001"]);
  });

  it("the callback bodies and headers match the webhook, and the event stream's data the notification schema", async () => {
    const [p, s] = [await subscriber(), await subscriber()];
    const target = await receiver();
    try {
      const subscribed = await documented("POST", "/twinning/v1/secondary/{addr}/subscriptions", { addr: s.address }, {
        token: s.token,
        body: { callbackReference: { notifyURL: target.url, callbackData: "watch-1" } },
      });
      expect(subscribed.status).toBe(201);
      const primaryStream = await SseClient.open(`${t.url}/twinning/v1/primary/${enc(p.address)}/notifications`, p.token);
      try {
        expect(primaryStream.status).toBe(200);
        const { twin } = await api.twin(p, s);
        await api.call("PUT", `/twinning/v1/primary/${enc(p.address)}/twins/${twin.twinId}/status`, { token: p.token, body: { status: "Off" } });
        await api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "On" } });
        await api.call("DELETE", `/twinning/v1/secondary/${enc(s.address)}/twinning`, { token: s.token });

        // Callbacks to the secondary: activated (by the primary) and the status change.
        await until(() => (target.received.length >= 2 ? true : undefined), "two callbacks");
        const hook = doc.webhooks!.twinningNotification!.post;
        const hookSchema = hook.requestBody.content["application/json"].schema;
        for (const { headers, body } of target.received) {
          expectValid(hookSchema, body, "callback body");
          expect(Object.values(body)[0]).toMatchObject({ callbackData: "watch-1", twinId: twin.twinId });
          expect(headers["x-notification-delivery-id"], "the documented delivery id header").toEqual(expect.any(String));
        }
        expect(target.received.map((r) => Object.keys(r.body)[0])).toEqual(expect.arrayContaining(["twinningActivatedNotification", "twinningStatusNotification"]));

        // Events to the primary: the secondary's toggle and deactivation, as the stream's item schema says.
        const events = await primaryStream.waitFor(2);
        const item = doc.paths["/twinning/v1/primary/{addr}/notifications"]!.get.responses["200"].content["text/event-stream"]["x-itemSchema"];
        for (const event of events) expectValid(item, { id: event.id, event: event.event, data: JSON.stringify(event.data) }, `event ${event.event}`);
        expect(events.map((e) => e.event)).toEqual(["twinningStatusNotification", "twinningDeactivatedNotification"]);
      } finally {
        await primaryStream.close();
      }
    } finally {
      target.server.closeAllConnections();
      await new Promise((r) => target.server.close(r));
    }
  });

  it("the routes around the device API (token, introspection, JWKS, health, readiness, metrics) answer as components.pathItems describes them", async () => {
    const p = await subscriber();
    const basic = `Basic ${Buffer.from(`${enc(p.address)}:${enc(p.credential)}`).toString("base64")}`;
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const tokenOp = around("/oauth/token", "post");
    expect(Object.keys(tokenOp.requestBody.content)).toEqual(["application/x-www-form-urlencoded"]);
    const granted = await api.call("POST", "/oauth/token", { headers: { ...form, authorization: basic }, rawBody: "grant_type=client_credentials&scope=twinning" });
    expect(granted.status).toBe(200);
    expectValid(answerSchema(tokenOp, 200, "token"), granted.body, "token 200");
    for (const [rawBody, status, error] of [
      ["grant_type=password", 400, "unsupported_grant_type"],
      ["grant_type=client_credentials&scope=other", 400, "invalid_scope"],
    ] as const) {
      const refused = await api.call("POST", "/oauth/token", { headers: { ...form, authorization: basic }, rawBody });
      expect([refused.status, refused.body.error]).toEqual([status, error]);
      expectValid(answerSchema(tokenOp, status, "token"), refused.body, `token ${status}`);
    }
    const wrongSecret = await api.call("POST", "/oauth/token", {
      headers: { ...form, authorization: `Basic ${Buffer.from(`${enc(p.address)}:wrong-secret`).toString("base64")}` },
      rawBody: "grant_type=client_credentials",
    });
    expect(wrongSecret.status).toBe(401);
    expectValid(answerSchema(tokenOp, 401, "token"), wrongSecret.body, "token 401");

    const introspectOp = around("/oauth/introspect", "post");
    for (const token of [granted.body.access_token, "not-a-token"]) {
      const answer = await api.call("POST", "/oauth/introspect", { headers: { ...form, authorization: `Bearer ${t.node.adminToken}` }, rawBody: `token=${encodeURIComponent(token)}` });
      expect(answer.status).toBe(200);
      expectValid(answerSchema(introspectOp, 200, "introspect"), answer.body, "introspect 200");
    }
    const unauthorized = await api.call("POST", "/oauth/introspect", { headers: form, rawBody: "token=x" });
    expect(unauthorized.status).toBe(401);
    expectValid(answerSchema(introspectOp, 401, "introspect"), unauthorized.body, "introspect 401");

    // A JWK carries more than the members the document names: checked open.
    expectValid(answerSchema(around("/.well-known/jwks.json", "get"), 200, "jwks"), (await api.call("GET", "/.well-known/jwks.json")).body, "jwks", false);
    expectValid(answerSchema(around("/healthz", "get"), 200, "healthz"), (await api.call("GET", "/healthz")).body, "healthz");
    expectValid(answerSchema(around("/readyz", "get"), 200, "readyz"), (await api.call("GET", "/readyz")).body, "readyz");
    const metrics = await fetch(`${t.url}/metrics`);
    expect(metrics.status).toBe(200);
    answerSchema(around("/metrics", "get"), 200, "metrics", (metrics.headers.get("content-type") ?? "").split(";")[0]!);
    await metrics.text();
  });
});

describe("the admin API and the federation JWKS against the document", () => {
  // A node with federation (one operator, no peers), whose callbacks die at their first failure.
  const fed = new Federation();
  let op: FederatedOperator;
  beforeAll(async () => {
    await fed.start(["001-01"], () => ({ delivery: { maxAttempts: 1 } }));
    op = fed.get("001-01");
  });
  afterAll(async () => fed.stop());
  const admin = () => ({ token: op.t.node.adminToken, via: op.api });

  it("provisioning (201, then 200) and reading a subscriber answer as documented", async () => {
    const address = newAddress();
    const at = { addr: address };
    const body = { subscriber: { twinning: true, credential: "credential-0123456789" } };
    const created = await documented("PUT", "/admin/v1/subscribers/{addr}", at, { ...admin(), body });
    expect(created.status).toBe(201);
    expect(created.body.subscriber.address).toBe(address);
    const updated = await documented("PUT", "/admin/v1/subscribers/{addr}", at, { ...admin(), body: { subscriber: { ...body.subscriber, twinning: false } } });
    expect([updated.status, updated.body.subscriber.twinning]).toEqual([200, false]);
    const read = await documented("GET", "/admin/v1/subscribers/{addr}", at, admin());
    expect([read.status, read.body.subscriber.address]).toEqual([200, address]);
    expect((await documented("DELETE", "/admin/v1/subscribers/{addr}", at, admin())).status).toBe(204);
    const gone = await documented("GET", "/admin/v1/subscribers/{addr}", at, admin());
    expect([gone.status, messageId(gone.body)]).toEqual([404, "SVC0002"]);
  });

  it("the twin list's pages (a full one with next, the last without) answer as documented", async () => {
    const mine: string[] = [];
    for (let i = 0; i < 2; i++) {
      const [p, s] = [await op.party(newAddress()), await op.party(newAddress())];
      mine.push((await op.api.twin(p, s)).twin.twinId);
    }
    const first = await documented("GET", "/admin/v1/twins", {}, { ...admin(), query: "?limit=1" });
    expect(first.status).toBe(200);
    expect(first.body.twins).toHaveLength(1);
    expect(first.body.next).toBe(first.body.twins[0].twinId);
    const rest = await documented("GET", "/admin/v1/twins", {}, { ...admin(), query: `?after=${first.body.next}` });
    expect(rest.status).toBe(200);
    expect(rest.body.next).toBeUndefined();
    const all = [...first.body.twins, ...rest.body.twins].map((x: { twinId: string }) => x.twinId);
    expect(all).toEqual(expect.arrayContaining(mine));
    expect(new Set(all).size).toBe(all.length);
    expect(rest.body.twins[0]).toMatchObject({ primaryOperatorId: "001-01", secondaryOperatorId: "001-01", version: expect.any(Number) });
    const malformed = await documented("GET", "/admin/v1/twins", {}, { ...admin(), query: "?after=not-a-uuid" });
    expect([malformed.status, messageId(malformed.body)]).toEqual([400, "SVC0002"]);
  });

  it("a dead letter (a callback given up on) is listed as documented", async () => {
    const [p, s] = [await op.party(newAddress()), await op.party(newAddress())];
    await op.api.twin(p, s);
    const subscribed = await op.api.call("POST", `/twinning/v1/primary/${enc(p.address)}/subscriptions`, {
      token: p.token,
      body: { callbackReference: { notifyURL: "http://127.0.0.1:1/callbacks?token=in-the-query" } },
    });
    expect(subscribed.status).toBe(201);
    expect((await op.api.call("PUT", `/twinning/v1/secondary/${enc(s.address)}/twinning/status`, { token: s.token, body: { status: "Off" } })).status).toBe(200);
    const listed = await eventually(
      () => documented("GET", "/admin/v1/deadLetters", {}, admin()),
      (r) => r.status === 200 && r.body.deadLetters.length > 0,
    );
    expect(listed.body.deadLetters[0]).toMatchObject({ kind: "callback", target: "http://127.0.0.1:1/callbacks", attempts: 1, lastError: expect.any(String) });
  });

  it("the peer-list reload answers as documented: its counts with federation, POL0001 without", async () => {
    const reloaded = await documented("POST", "/admin/v1/peers/reload", {}, admin());
    expect(reloaded.status).toBe(200);
    expect(reloaded.body).toEqual({ peers: 0, keys: 1 });
    const without = await documented("POST", "/admin/v1/peers/reload", {}, { token: t.node.adminToken });
    expect([without.status, messageId(without.body)]).toEqual([403, "POL0001"]);
  });

  it("GET /.well-known/federation-jwks.json answers as components.pathItems describes it: the signing keys with federation, none without", async () => {
    const schema = answerSchema(around("/.well-known/federation-jwks.json", "get"), 200, "federation jwks");
    const withFederation = await op.api.call("GET", "/.well-known/federation-jwks.json");
    expect(withFederation.status).toBe(200);
    // Every member the node sends is named by the document (checked closed), and the key is public.
    expectValid(schema, withFederation.body, "federation jwks");
    expect(withFederation.body.keys.map((k: { kid: string }) => k.kid)).toEqual(op.publicJwks.keys.map((k) => k.kid));
    for (const key of withFederation.body.keys) expect(key).not.toHaveProperty("d");
    const withoutFederation = await api.call("GET", "/.well-known/federation-jwks.json");
    expect(withoutFederation.status).toBe(200);
    expectValid(schema, withoutFederation.body, "federation jwks (no federation)");
    expect(withoutFederation.body.keys).toEqual([]);
  });
});
