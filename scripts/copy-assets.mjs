// Copies non-TypeScript sources (Lua and SQL scripts) next to the compiled modules, and makes
// the CLI entry point executable.
import { chmodSync, cpSync, existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const src = fileURLToPath(new URL("../src", import.meta.url));
const dist = fileURLToPath(new URL("../dist", import.meta.url));
const ASSETS = /\.(lua|sql)$/;

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (ASSETS.test(name)) cpSync(path, join(dist, relative(src, path)));
  }
}
walk(src);

// The CLI entry point must be executable (package.json "bin"); tsc keeps its shebang.
const cli = join(dist, "cli", "main.js");
if (existsSync(cli)) chmodSync(cli, 0o755);
