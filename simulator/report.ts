import type { MessageEvent } from "./operator-process.ts";
import type { ScenarioResult } from "./run-scenarios.ts";

export interface ReportInput {
  readonly title: string;
  readonly startedAt: number;
  readonly seed: number;
  readonly operators: readonly { operatorId: string; deviceUrl: string }[];
  readonly results: readonly ScenarioResult[];
  /** Every cross-operator message, as its sender logged it (empty in conformance mode). */
  readonly messages: readonly MessageEvent[];
  /** Each node's active twins at the end (admin API), or undefined when not available. */
  readonly finalState: ReadonlyMap<string, readonly any[] | undefined>;
  readonly labels: ReadonlyMap<string, "pass" | "fail" | "skip">;
}

const esc = (s: unknown): string => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
const shortPath = (p: string) => p.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, (id) => `${id.slice(0, 8)}…`);
const messageType = (m: MessageEvent) => `${m.method} ${shortPath(m.path)}`;

/** The sequence diagram: one lifeline per operator, one arrow per message, grouped by scenario. */
function sequenceDiagram(input: ReportInput): string {
  if (input.messages.length === 0) return `<p class="muted">No cross-operator messages were recorded${input.finalState.size === 0 ? "" : " (conformance mode sees only the device side)"}.</p>`;
  const lanes = input.operators.map((o) => o.operatorId);
  const laneX = (id: string) => 180 + lanes.indexOf(id) * 260;
  const width = 180 + lanes.length * 260;
  const rowH = 26;
  const sorted = [...input.messages].sort((a, b) => a.time - b.time);
  const rows: string[] = [];
  let y = 60;
  let currentScenario = "";
  for (const m of sorted) {
    const scenario = [...input.results].reverse().find((r) => r.startedAt <= m.time)?.id ?? "";
    if (scenario !== currentScenario) {
      currentScenario = scenario;
      y += 8;
      rows.push(`<text class="scn" x="8" y="${y + 4}">${esc(scenario)}</text><line class="sep" x1="8" x2="${width - 10}" y1="${y - 12}" y2="${y - 12}"/>`);
    }
    const [x1, x2] = [laneX(m.from), laneX(m.to)];
    const ok = m.status >= 200 && m.status < 300;
    const cls = ok ? "ok" : "bad";
    const result = m.status === 0 ? `unreachable` : String(m.status);
    const label = `${messageType(m)} → ${result} · ${m.ms.toFixed(1)} ms`;
    const dir = x2 > x1 ? 1 : -1;
    rows.push(
      `<g class="msg ${cls}" data-from="${esc(m.from)}" data-to="${esc(m.to)}" data-status="${m.status}"><title>${esc(`${m.from} → ${m.to}: ${m.method} ${m.path}, msgId ${m.msgId}, ${result}${m.error ? ` (${m.error})` : ""}, ${m.ms} ms`)}</title>` +
        `<line x1="${x1}" x2="${x2 - dir * 6}" y1="${y}" y2="${y}"/><polygon points="${x2},${y} ${x2 - dir * 8},${y - 4} ${x2 - dir * 8},${y + 4}"/>` +
        `<text x="${(x1 + x2) / 2}" y="${y - 5}" text-anchor="middle">${esc(label)}</text></g>`,
    );
    y += rowH;
  }
  const height = y + 20;
  const heads = lanes
    .map((id) => `<text class="lane" x="${laneX(id)}" y="24" text-anchor="middle">${esc(id)}</text><line class="life" x1="${laneX(id)}" x2="${laneX(id)}" y1="34" y2="${height - 10}"/>`)
    .join("");
  return `<svg class="seq" role="img" aria-label="Sequence diagram of cross-operator messages" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${heads}${rows.join("")}</svg>`;
}

function scenarioTable(results: readonly ScenarioResult[]): string {
  const rows = results
    .map(
      (r) =>
        `<tr class="${r.status}"><td>${esc(r.id)}</td><td>${esc(r.title)}</td><td class="labels">${r.labels.map(esc).join(" ")}</td><td class="result">${r.status.toUpperCase()}</td><td class="num">${r.ms} ms</td><td>${esc(r.error ?? "")}</td></tr>`,
    )
    .join("");
  return `<table id="scenarios"><thead><tr><th>scenario</th><th>what it shows</th><th>labels</th><th>result</th><th>time</th><th>detail</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function finalStateTables(state: ReadonlyMap<string, readonly any[] | undefined>): string {
  return [...state]
    .map(([operatorId, twins]) => {
      if (!twins) return `<h3>${esc(operatorId)}</h3><p class="muted">Not available (no admin twin listing).</p>`;
      const rows = twins
        .map(
          (t) =>
            `<tr><td title="${esc(t.twinId)}">${esc(String(t.twinId).slice(0, 8))}…</td><td>${esc(t.primaryAddress)} <span class="muted">${esc(t.primaryOperatorId)}</span></td><td>${esc(t.secondaryAddress)} <span class="muted">${esc(t.secondaryOperatorId)}</span></td><td>${esc(t.name)}</td><td>${esc(t.status)}</td><td class="num">${esc(t.version)}</td></tr>`,
        )
        .join("");
      return `<h3>${esc(operatorId)} <span class="muted">(${twins.length} active twins)</span></h3><table class="state" data-operator="${esc(operatorId)}"><thead><tr><th>twin</th><th>primary</th><th>secondary</th><th>name</th><th>status</th><th>version</th></tr></thead><tbody>${rows}</tbody></table>`;
    })
    .join("");
}

/** One self-contained HTML file: no scripts, fonts or anything fetched from elsewhere. */
export function renderReport(input: ReportInput): string {
  const passed = input.results.filter((r) => r.status === "pass").length;
  const failed = input.results.filter((r) => r.status === "fail").length;
  const skipped = input.results.filter((r) => r.status === "skip").length;
  const labels = [...input.labels].map(([label, v]) => `<li class="${v}">${esc(label)} <b>${v}</b></li>`).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(input.title)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d1d1f;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.summary{font-size:16px;margin:8px 0 16px}.summary b.pass{color:#137333}.summary b.fail{color:#b3261e}
table{border-collapse:collapse;width:100%;margin-bottom:8px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f6}
tr.pass td.result{color:#137333;font-weight:600}tr.fail td.result{color:#b3261e;font-weight:600}tr.skip td.result{color:#777}
td.num{text-align:right;white-space:nowrap}td.labels{font-size:12px;color:#555}.muted{color:#777}
ul.labels{columns:4;list-style:none;padding:0}ul.labels li.pass b{color:#137333}ul.labels li.fail b{color:#b3261e}ul.labels li.skip b{color:#777}
.seq{font-size:11px;background:#fcfcfd;border:1px solid #e3e3e8}.seq .lane{font-size:13px;font-weight:600}.seq .life{stroke:#aaa;stroke-dasharray:4 4}
.seq .msg line{stroke-width:1.5}.seq .ok line{stroke:#1a73e8}.seq .ok polygon{fill:#1a73e8}.seq .bad line{stroke:#b3261e}.seq .bad polygon{fill:#b3261e}.seq .bad text{fill:#b3261e}
.seq .scn{font-weight:600;fill:#555}.seq .sep{stroke:#e0e0e6}.diagram{overflow:auto;max-height:900px}
</style></head>
<body>
<h1>${esc(input.title)}</h1>
<div class="muted">${esc(new Date(input.startedAt).toISOString())} · ${input.operators.length} operators (${input.operators.map((o) => esc(o.operatorId)).join(", ")}) · seed ${input.seed}</div>
<p class="summary" id="summary"><b class="pass">${passed} passed</b>, <b class="${failed ? "fail" : "pass"}">${failed} failed</b>${skipped ? `, ${skipped} skipped` : ""}; ${input.messages.length} cross-operator messages.</p>
<h2>Scenarios</h2>
${scenarioTable(input.results)}
<h2>Requirement labels</h2>
<ul class="labels">${labels}</ul>
<h2>Cross-operator messages</h2>
<p class="muted">Every signed federation message, as its sender saw it: from → to, message type, result and latency. Hover an arrow for its msgId.</p>
<div class="diagram">${sequenceDiagram(input)}</div>
<h2>Final twin state on every node</h2>
${finalStateTables(input.finalState)}
</body></html>
`;
}
