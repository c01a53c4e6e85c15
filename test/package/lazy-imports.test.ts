// Importing `chicory` loads no driver, no Kysely and no pino: an app pays (in start-up time and
// RSS: Kysely alone is ~20 MB) only for what it connects to. A resolve hook records every
// package the built entry point pulls in; connecting a SQLite backend then loads Kysely.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));

/** A module resolve hook (data: URL) that prints every bare specifier it sees to stderr. */
const HOOK = `export async function resolve(specifier, context, next) {
  if (!/^(node:|\\.|\\/|file:|data:)/.test(specifier)) process.stderr.write("import " + specifier + "\\n");
  return next(specifier, context);
}`;

async function packagesLoadedBy(script: string): Promise<string[]> {
  const register = `import { register } from "node:module"; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOK)}`)});`;
  const { stderr } = await run(
    process.execPath,
    ["--import", `data:text/javascript,${encodeURIComponent(register)}`, "--input-type=module", "-e", script],
    { cwd: root },
  );
  return [...new Set(stderr.split("\n").flatMap((l) => (l.startsWith("import ") ? [l.slice(7)] : [])))];
}

describe("lazy loading of drivers", () => {
  it("importing the package loads only its small dependencies", async () => {
    const loaded = await packagesLoadedBy(`await import("./dist/index.js");`);
    for (const heavy of ["kysely", "ioredis", "amqplib", "better-sqlite3", "pg", "mysql2", "tedious", "pino"]) {
      expect(loaded, `${heavy} loaded by import "chicory"`).not.toContain(heavy);
    }
  });

  it("a SQL backend loads Kysely when it connects", async () => {
    const loaded = await packagesLoadedBy(`
      const { SqliteBackend } = await import("./dist/sql.js");
      const backend = new SqliteBackend({ url: "sqlite::memory:" });
      console.error("constructed");
      await backend.connect();
      await backend.disconnect();`);
    expect(loaded).toContain("kysely");
  });
});
