// Copies non-TypeScript sources (Lua and SQL scripts) next to the compiled modules.
import { cpSync, readdirSync, statSync } from "node:fs";
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
