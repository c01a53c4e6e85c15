// Builds a private copy of the package into .tmp/bench-dist (scripts/build.mjs, no types) so a long
// benchmark run is not broken by someone rebuilding dist/ meanwhile. Then run the scripts with
// CHICORY_DIST=.tmp/bench-dist. Records a fingerprint of src/ in .tmp/bench-dist/SNAPSHOT.json.
// Usage (from the repository root): node bench/snapshot.mjs
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const out = path.join(repo, ".tmp", "bench-dist");
fs.rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [path.join(repo, "scripts/build.mjs"), `--outdir=${out}`, "--no-types"], {
  stdio: "inherit",
  timeout: 180000,
});
const hash = createHash("sha256");
let files = 0;
const walk = (dir) => {
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (fs.statSync(p).isDirectory()) walk(p);
    else {
      hash.update(`${path.relative(repo, p)}\0`).update(fs.readFileSync(p));
      files++;
    }
  }
};
walk(path.join(repo, "src"));
const info = { builtAt: new Date().toISOString(), srcFiles: files, srcSha256: hash.digest("hex").slice(0, 16) };
fs.writeFileSync(path.join(out, "SNAPSHOT.json"), JSON.stringify(info, null, 1));
console.log(`built ${out}`, info);
