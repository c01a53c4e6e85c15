// Summarises V8 .cpuprofile files (from `node --cpu-prof`): top functions by self time, and
// self time grouped by package / file (node internals, ioredis, chicory dist, ...).
// Usage: node bench/profile-top.mjs <file.cpuprofile> [--top=25]
import fs from "node:fs";
import { parseArgs } from "./lib/common.mjs";

const files = process.argv.slice(2).filter((f) => !f.startsWith("--"));
const top = Number(parseArgs().top || 25);
for (const file of files) {
  const prof = JSON.parse(fs.readFileSync(file, "utf8"));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    self.set(id, (self.get(id) || 0) + (dt[i] || 0));
  }
  const total = [...self.values()].reduce((s, x) => s + x, 0);
  const fn = new Map();
  const group = new Map();
  for (const [id, us] of self) {
    const { callFrame: c } = byId.get(id);
    const url = c.url || "";
    const short = url
      .replace(/^file:\/\//, "")
      .replace(/.*node_modules\//, "nm:")
      .replace(/.*\/(dist|bench-dist)\//, "chicory:");
    const key = `${c.functionName || "(anonymous)"} ${short ? `${short.split("/").slice(-2).join("/")}:${c.lineNumber + 1}` : ""}`;
    fn.set(key, (fn.get(key) || 0) + us);
    let g = "(program/gc/idle)";
    if (short.startsWith("nm:")) g = short.slice(3).split("/")[0];
    else if (short.startsWith("chicory:")) g = `chicory ${short.slice(8).split("/").slice(0, -1).join("/") || "."}`;
    else if (short.startsWith("node:")) g = "node internals";
    else if (short) g = short.split("/").slice(-2).join("/");
    else if (c.functionName && !c.functionName.startsWith("(")) g = "native/builtins";
    else g = c.functionName || g;
    group.set(g, (group.get(g) || 0) + us);
  }
  const pct = (us) => `${((100 * us) / total).toFixed(1)}%`;
  console.log(`\n## ${file} (${(total / 1e6).toFixed(2)} s sampled)\n`);
  console.log("self time by group:");
  for (const [k, v] of [...group].sort((x, y) => y[1] - x[1]).slice(0, 15))
    console.log(`  ${pct(v).padStart(6)}  ${k}`);
  console.log(`top ${top} functions by self time:`);
  for (const [k, v] of [...fn].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`  ${pct(v).padStart(6)}  ${k}`);
}
