import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../..");
const LABEL = /(?:HLF-[A-Z]{2}-\d{3}|OAU-\d{3})/;

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? testFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []));
}

/** The README's requirement table: each label's row. */
function tableRows(): Map<string, string> {
  const rows = new Map<string, string>();
  for (const line of readFileSync(join(ROOT, "README.md"), "utf8").split("\n")) {
    const m = new RegExp(`^\\| (${LABEL.source}) `).exec(line);
    if (m) rows.set(m[1]!, line);
  }
  return rows;
}

describe("the README's requirement table", () => {
  it("has a row for every label a test names, and that row names the test's file", () => {
    const rows = tableRows();
    expect(rows.size).toBeGreaterThan(30);
    const unlisted: string[] = [];
    let labelled = 0;
    for (const file of testFiles(join(ROOT, "test"))) {
      const path = relative(ROOT, file);
      const text = readFileSync(file, "utf8");
      // Names that start with one or more labels: any string that is a call's first argument,
      // so it(…), it.each(…)(…), test(…) and describe(…) alike, whatever their other arguments hold.
      for (const m of text.matchAll(new RegExp(`\\(\\s*["'\`]((?:${LABEL.source} )+)`, "g"))) {
        for (const label of m[1]!.trim().split(" ")) {
          labelled += 1;
          const row = rows.get(label);
          if (!row || !row.includes(`\`${path}\``)) unlisted.push(`${label} ${path}`);
        }
      }
    }
    // The search found the suite's labelled tests (hundreds), not nothing.
    expect(labelled).toBeGreaterThan(300);
    expect([...new Set(unlisted)]).toEqual([]);
  });
});

describe("docs/DESIGN.md", () => {
  it("is the federation's shared wire contract, unchanged (when the shared checkout is beside this one)", ({ skip }) => {
    const shared = join(ROOT, "../shared/DESIGN.md");
    if (!existsSync(shared)) return skip("no ../shared checkout beside this one");
    expect(readFileSync(join(ROOT, "docs/DESIGN.md"), "utf8")).toBe(readFileSync(shared, "utf8"));
  });
});

describe("the README's configuration table", () => {
  it("HLF-CM-006 names every setting's environment variable in full", async () => {
    const { configEnvironmentVariables } = await import("../../node/config/node-config.ts");
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const table = readme.slice(readme.indexOf("## Configuration"), readme.indexOf("\n## ", readme.indexOf("## Configuration") + 1));
    expect(configEnvironmentVariables.length).toBeGreaterThan(40);
    expect(configEnvironmentVariables.filter((v) => !new RegExp(`[| ]${v.name}[ |]`).test(table)).map((v) => v.name)).toEqual([]);
  });
});
