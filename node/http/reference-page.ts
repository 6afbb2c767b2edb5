/**
 * A self-contained API reference page rendered from the OpenAPI document: no scripts, no
 * fonts and nothing fetched from elsewhere, so it works on a closed network. It shows the
 * versioned API (`paths`, with each operation's callbacks), the routes around it
 * (`components.pathItems`, each under its `x-path`) and the notification callbacks (`webhooks`).
 */
const esc = (s: unknown): string =>
  String(s ?? "").replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!);

const METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);

interface Operation {
  summary?: string;
  description?: string;
  tags?: string[];
  parameters?: { name: string; in: string; description?: string }[];
  requestBody?: { content?: Record<string, { schema?: unknown }> };
  responses?: Record<string, { description?: string }>;
  /** Callback name → runtime expression (the URL) → path item. */
  callbacks?: Record<string, Record<string, PathItem>>;
}

/** A path item: its operations by method, and (under components.pathItems) `x-path`. */
type PathItem = Record<string, unknown> & { "x-path"?: string };

interface Doc {
  info: { title: string; description?: string; version: string };
  paths?: Record<string, PathItem>;
  webhooks?: Record<string, PathItem>;
  components?: { schemas?: Record<string, unknown>; pathItems?: Record<string, PathItem> };
}

const operationsOf = (item: PathItem): [string, Operation][] =>
  Object.entries(item).filter(([key, op]) => METHODS.has(key) && typeof op === "object" && op !== null) as [string, Operation][];

const methodBadge = (method: string) => `<span class="m ${esc(method)}">${esc(method.toUpperCase())}</span>`;

/** A schema as JSON; a reference to a component schema is named and shown resolved (one level). */
function schemaBlock(doc: Doc, schema: unknown): string {
  const ref = (schema as { $ref?: unknown } | undefined)?.$ref;
  const prefix = "#/components/schemas/";
  if (typeof ref === "string" && ref.startsWith(prefix)) {
    const name = ref.slice(prefix.length);
    const target = doc.components?.schemas?.[name];
    if (target !== undefined) return `<p>Schema <code>${esc(name)}</code></p><pre>${esc(JSON.stringify(target, null, 2))}</pre>`;
  }
  return `<pre>${esc(JSON.stringify(schema, null, 2))}</pre>`;
}

function requestBody(doc: Doc, op: Operation, heading: string): string {
  return Object.entries(op.requestBody?.content ?? {})
    .filter(([, media]) => media?.schema !== undefined)
    .map(([mediaType, media]) => `<${heading}>Request body <code>${esc(mediaType)}</code></${heading}>${schemaBlock(doc, media.schema)}`)
    .join("");
}

function callbacks(doc: Doc, op: Operation): string {
  const items = Object.entries(op.callbacks ?? {}).flatMap(([name, expressions]) =>
    Object.entries(expressions ?? {}).flatMap(([expression, item]) =>
      operationsOf(item).map(
        ([method, cb]) => `<div class="cb"><p><b>${esc(name)}</b> ${methodBadge(method)} <code>${esc(expression)}</code></p><p>${esc(cb.summary)}</p>${requestBody(doc, cb, "h5")}</div>`,
      ),
    ),
  );
  return items.length > 0 ? `<h4>Callbacks</h4>${items.join("")}` : "";
}

function operationSection(doc: Doc, heading: string, op: Operation): string {
  const params = (op.parameters ?? []).map((p) => `<li><code>${esc(p.name)}</code> (${esc(p.in)}) ${esc(p.description)}</li>`).join("");
  const responses = Object.entries(op.responses ?? {}).map(([code, r]) => `<li><b>${esc(code)}</b> ${esc(r?.description)}</li>`).join("");
  return `<section><h3>${heading}</h3>
<p>${esc(op.summary)}</p>${op.description ? `<p>${esc(op.description)}</p>` : ""}${params ? `<h4>Parameters</h4><ul>${params}</ul>` : ""}
${requestBody(doc, op, "h4")}<h4>Responses</h4><ul>${responses}</ul>${callbacks(doc, op)}</section>`;
}

export function referencePage(document: object): string {
  const doc = document as Doc;
  const api: string[] = [];
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of operationsOf(item)) api.push(operationSection(doc, `${methodBadge(method)} <code>${esc(path)}</code>`, op));
  }
  const around: string[] = [];
  for (const [name, item] of Object.entries(doc.components?.pathItems ?? {})) {
    // x-path is the route's real path; without one, the component's name is all there is.
    const path = typeof item["x-path"] === "string" ? item["x-path"] : name;
    for (const [method, op] of operationsOf(item)) around.push(operationSection(doc, `${methodBadge(method)} <code>${esc(path)}</code>`, op));
  }
  const webhooks: string[] = [];
  for (const [name, item] of Object.entries(doc.webhooks ?? {})) {
    for (const [method, op] of operationsOf(item)) webhooks.push(operationSection(doc, `${methodBadge(method)} <code>${esc(name)}</code> <small>webhook</small>`, op));
  }
  const parts = [
    { id: "paths", title: "Versioned API", sections: api },
    { id: "around", title: "Routes outside the versioned API", sections: around },
    { id: "webhooks", title: "Webhooks: callbacks the node sends", sections: webhooks },
  ].filter((x) => x.sections.length > 0);
  const contents = parts.map((x) => `<a href="#${x.id}">${esc(x.title)}</a>`);
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(doc.info.title)}</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
section{border-top:1px solid #ddd;padding:.5em 0}.m{display:inline-block;min-width:4.5em;text-align:center;border-radius:4px;color:#fff;background:#777;font-size:.8em;padding:.1em .4em}
.get{background:#2b7}.post{background:#27c}.put{background:#c82}.patch{background:#a5c}.delete{background:#c33}pre{background:#f5f5f5;padding:.5em;overflow:auto;font-size:.85em}
.cb{border-left:3px solid #ddd;padding-left:.8em;margin:.5em 0}</style></head>
<body><h1>${esc(doc.info.title)} <small>${esc(doc.info.version)}</small></h1><p>${esc(doc.info.description)}</p>
<p>Machine-readable: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).${contents.length > 0 ? ` Contents: ${contents.join(" · ")}` : ""}</p>${parts.map((x) => `<h2 id="${x.id}">${esc(x.title)}</h2>\n${x.sections.join("\n")}`).join("\n")}</body></html>`;
}
