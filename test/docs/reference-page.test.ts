import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { referencePage } from "../../node/http/reference-page.ts";
import { startTestNode, type TestNode } from "../helpers/test-node.ts";

/**
 * The HTML reference page at /twinning/v1/docs against the document the same node serves: what
 * the document describes outside `paths` (components.pathItems by their x-path, webhooks, an
 * operation's callbacks) is on the page, escaped, and the page fetches nothing.
 */

type PathItem = Record<string, any>;
type Doc = {
  paths: Record<string, PathItem>;
  webhooks?: Record<string, PathItem>;
  components: { schemas: Record<string, unknown>; pathItems?: Record<string, PathItem> };
};

/** HTML text escaping, as a page must apply it to what the document says. */
const html = (s: string) => s.replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!);
const METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
const operations = (item: PathItem) => Object.entries(item).filter(([m]) => METHODS.includes(m));

let t: TestNode;
let doc: Doc;
let page: string;
beforeAll(async () => {
  t = await startTestNode();
  doc = (await (await fetch(`${t.url}/twinning/v1/openapi.json`)).json()) as Doc;
  const res = await fetch(`${t.url}/twinning/v1/docs`);
  expect(res.headers.get("content-type")).toMatch(/^text\/html/);
  page = await res.text();
});
afterAll(async () => t?.cleanup());

/** The page's part under one of its headings, up to the next. */
function part(id: string): string {
  const start = page.indexOf(`<h2 id="${id}">`);
  expect(start, `no ${id} section`).toBeGreaterThanOrEqual(0);
  const next = page.indexOf("<h2 ", start + 1);
  return page.slice(start, next === -1 ? undefined : next);
}

/** Each section (one operation) of a part, by its heading's method and shown path or name. */
function section(within: string, method: string, shown: string): string {
  const heading = `<h3><span class="m ${method}">${method.toUpperCase()}</span> <code>${html(shown)}</code>`;
  const start = within.indexOf(heading);
  expect(start, `no section for ${method.toUpperCase()} ${shown}`).toBeGreaterThanOrEqual(0);
  const end = within.indexOf("</section>", start);
  return within.slice(start, end);
}

describe("the reference page", () => {
  it("shows every route under components.pathItems by its x-path (the OAuth token endpoint and the federation JWKS among them), with its summary and responses", () => {
    const items = Object.values(doc.components.pathItems ?? {});
    const xPaths = items.map((i) => i["x-path"]);
    expect(xPaths).toEqual(expect.arrayContaining(["/oauth/token", "/.well-known/federation-jwks.json"]));
    const around = part("around");
    for (const item of items) {
      for (const [method, operation] of operations(item)) {
        const shown = section(around, method, item["x-path"]);
        expect(shown).toContain(html(operation.summary));
        for (const [status, response] of Object.entries(operation.responses as Record<string, { description: string }>)) expect(shown).toContain(`<b>${status}</b> ${html(response.description)}`);
      }
    }
    // The token endpoint's form body, with its schema.
    const token = section(around, "post", "/oauth/token");
    expect(token).toContain("Request body <code>application/x-www-form-urlencoded</code>");
    expect(token).toContain(html(JSON.stringify(doc.components.schemas.TokenRequest, null, 2)));
  });

  it("shows each webhook: its name, method, summary and request body schema", () => {
    const webhooks = Object.entries(doc.webhooks ?? {});
    expect(webhooks.map(([name]) => name)).toContain("twinningNotification");
    const shownHooks = part("webhooks");
    for (const [name, item] of webhooks) {
      for (const [method, operation] of operations(item)) {
        const shown = section(shownHooks, method, name);
        expect(shown).toContain(html(operation.summary));
        const ref: string = operation.requestBody.content["application/json"].schema.$ref;
        const schemaName = ref.split("/").pop()!;
        expect(shown).toContain(`Schema <code>${html(schemaName)}</code>`);
        expect(shown).toContain(html(JSON.stringify(doc.components.schemas[schemaName], null, 2)));
        for (const parameter of operation.parameters ?? []) expect(shown).toContain(`<code>${html(parameter.name)}</code> (${parameter.in})`);
      }
    }
  });

  it("shows an operation's callbacks beside it (the subscription POST's notifyURL callback)", () => {
    const path = "/twinning/v1/secondary/{addr}/subscriptions";
    const callbacks = doc.paths[path]!.post.callbacks as Record<string, Record<string, PathItem>>;
    const shown = section(part("paths"), "post", path);
    expect(shown).toContain("<h4>Callbacks</h4>");
    for (const [name, expressions] of Object.entries(callbacks)) {
      for (const [expression, item] of Object.entries(expressions)) {
        for (const [, operation] of operations(item)) {
          expect(shown).toContain(`<b>${html(name)}</b>`);
          expect(shown).toContain(`<code>${html(expression)}</code>`);
          expect(shown).toContain(html(operation.summary));
        }
      }
    }
  });

  it("is self-contained: no scripts, no fonts, no stylesheets or images fetched", () => {
    for (const fetched of [/<script/i, /<link/i, /<img/i, /<iframe/i, /@import/i, /@font-face/i, /url\(/i, /\ssrc=/i]) expect(page).not.toMatch(fetched);
    // Its only links are the document beside it and anchors within the page.
    const hrefs = [...page.matchAll(/href="([^"]*)"/g)].map((m) => m[1]!);
    expect(hrefs.length).toBeGreaterThan(1);
    for (const href of hrefs) expect(href === "openapi.json" || href.startsWith("#"), href).toBe(true);
  });

  it("escapes what the document says in x-paths, webhook names, summaries, callbacks and schemas", () => {
    const evil = `<script>alert("x")</script>`;
    const rendered = referencePage({
      info: { title: evil, version: "1" },
      paths: {
        "/a": {
          post: {
            summary: evil,
            callbacks: { [evil]: { [`{$request.body#/${evil}}`]: { post: { summary: evil, requestBody: { content: { "application/json": { schema: { description: evil } } } } } } } },
          },
        },
      },
      webhooks: { [evil]: { post: { summary: evil, requestBody: { content: { "application/json": { schema: { $ref: "#/components/schemas/E" } } } } } } },
      components: { schemas: { E: { description: evil } }, pathItems: { e: { "x-path": `/e/${evil}`, get: { summary: evil, responses: { [evil]: { description: evil } } } } } },
    });
    expect(rendered).not.toContain("<script");
    expect(rendered).toContain(`<code>/e/${html(evil)}</code>`);
    expect(rendered).toContain(`<code>${html(evil)}</code> <small>webhook</small>`);
    expect(rendered).toContain(`<b>${html(evil)}</b>`);
    expect(rendered.match(/&lt;script&gt;/g)!.length).toBeGreaterThanOrEqual(10);
  });
});
