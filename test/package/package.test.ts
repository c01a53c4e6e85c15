// What users install is what we test: pack the built package (`--ignore-scripts`: no rebuild
// under the other tests running in parallel), install the tarball into an empty
// project, import every entry point and run a task on the in-memory broker.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "chicory-pkg-"));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the published package", () => {
  it("installs from its tarball and every entry point imports", async () => {
    const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--pack-destination", dir, "--silent"], {
      cwd: root,
    });
    const tarball = join(dir, stdout.trim().split("\n").at(-1) ?? "");
    const files = (await run("tar", ["-tzf", tarball])).stdout;
    expect(files).toContain("package/dist/index.js");
    expect(files).toContain("package/dist/index.d.ts");
    expect(files).toContain("package/dist/cli/main.js");
    // the code is bundled per entry point (shared code in dist/chunks/), the Lua scripts inside it
    expect(files).toMatch(/package\/dist\/chunks\/[^/\n]+\.js\n/);
    expect(files).not.toMatch(/\.lua\n/);
    expect(files).not.toMatch(/package\/(src|test)\//);
    // every relative link of the shipped Markdown (README, docs) points at a shipped file
    const shipped = new Set(files.split("\n").map((f) => f.replace(/^package\//, "").replace(/\/$/, "")));
    const broken: string[] = [];
    for (const doc of [...shipped].filter((f) => f.endsWith(".md"))) {
      for (const [, target] of readFileSync(join(root, doc), "utf8").matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^(https?:|mailto:|#)/.test(target ?? "")) continue;
        const path = join(doc, "..", (target ?? "").split("#")[0] ?? "").replace(/\/$/, "");
        if (!shipped.has(path) && ![...shipped].some((f) => f.startsWith(`${path}/`))) broken.push(`${doc}: ${target}`);
      }
    }
    expect(broken).toEqual([]);

    const project = join(dir, "project");
    await run("mkdir", ["-p", project]);
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", type: "module", private: true }));
    await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", tarball], {
      cwd: project,
      timeout: 240_000,
    });
    const exportsMap = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).exports as Record<string, unknown>;
    const entries = Object.keys(exportsMap).filter((e) => e !== "./package.json");
    const script = `
      ${entries.map((e, i) => `import * as m${i} from ${JSON.stringify(`chicory${e.slice(1)}`)};`).join("\n")}
      const loaded = [${entries.map((_, i) => `Object.keys(m${i}).length`).join(", ")}];
      const { Chicory, Worker, silentLogger } = m0;
      const app = new Chicory({ broker: "memory://", config: { env: {} } });
      const add = app.task(async function add(a, b) { return a + b; });
      const worker = new Worker(app, { logger: silentLogger });
      await worker.start();
      const value = await (await add.delay(2, 3)).get({ timeout: 5 });
      await worker.stop(1);
      // no broker configured: the embedded SQLite default, whose driver is not installed here
      const defaultError = await new Chicory({ config: { env: {} } }).connect().then(() => "", (e) => e.message);
      console.log(JSON.stringify({ loaded, value, defaultError }));
    `;
    writeFileSync(join(project, "check.mjs"), script);
    const out = await run(process.execPath, ["check.mjs"], { cwd: project, timeout: 60_000 });
    const result = JSON.parse(out.stdout.trim()) as { loaded: number[]; value: number; defaultError: string };
    expect(result.value).toBe(5);
    expect(result.defaultError).toMatch(
      /^no broker is configured \(no broker option, CHICORY_BROKER_URL not set: set it, e\.g\. to redis:\/\/localhost:6379, for another broker\), so the app uses the embedded SQLite default \(.*chicory\.db\), which needs the package "better-sqlite3@12": run npm install better-sqlite3@12$/,
    );
    expect(result.loaded.every((n) => n > 0)).toBe(true);
    const version = await run(join(project, "node_modules/.bin/chicory"), ["--version"], { cwd: project });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    // the CLI's inspection commands, which connect the broker alone, say the same
    writeFileSync(join(project, "app.mjs"), 'import { Chicory } from "chicory";\nexport const app = new Chicory();\n');
    const env = { ...process.env };
    for (const key of Object.keys(env)) if (key.startsWith("CHICORY_")) delete env[key];
    const stats = await run(join(project, "node_modules/.bin/chicory"), ["queue", "stats", "app.mjs"], {
      cwd: project,
      env,
    }).then(
      () => ({ stderr: "", code: 0 }),
      (e: { stderr: string; code: number }) => e,
    );
    expect(stats.code).toBe(1);
    expect(stats.stderr).toMatch(/^chicory: no broker is configured \(no broker option, CHICORY_BROKER_URL not set/);
    expect(stats.stderr.split("run npm install better-sqlite3@12")).toHaveLength(2); // said once
  }, 300_000);
});
