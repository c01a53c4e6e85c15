// Summarises V8 .cpuprofile files (node --cpu-prof): top self-time functions and self time per
// area (Chicory dist/ by file, amqplib, ioredis, node internals, GC, idle).
// Usage: node bench/rabbitmq/profile-top.mjs [--top=25] file.cpuprofile...
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "./lib.mjs";

const a = parseArgs();
const top = Number(a.top || 25);
const files = process.argv.slice(2).filter((f) => !f.startsWith("--"));

function area(url, name) {
  if (!url) return name.startsWith("(") ? name : "(native/builtin)";
  const u = url.replace(/^file:\/\//, "");
  const dist = /\/(?:dist|bench-rmq-dist-[^/]+)\/(.*)$/.exec(u);
  if (dist && !u.includes("node_modules")) return `chicory ${dist[1]}`;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (nm) return nm[1];
  if (u.startsWith("node:")) return "node internals";
  if (u.includes("/bench/rabbitmq/")) return `bench ${path.basename(u)}`;
  return path.basename(u);
}

for (const file of files) {
  const prof = JSON.parse(fs.readFileSync(file, "utf8"));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i];
    self.set(id, (self.get(id) || 0) + (prof.timeDeltas[i] || 0));
  }
  const fn = new Map();
  const areas = new Map();
  let total = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const name = cf.functionName || "(anonymous)";
    const where = cf.url ? `${path.basename(cf.url)}:${cf.lineNumber + 1}` : "";
    const k = `${name} ${where}`.trim();
    const ar = area(cf.url, name);
    fn.set(k, { us: (fn.get(k)?.us || 0) + us, area: ar });
    areas.set(ar, (areas.get(ar) || 0) + us);
    total += us;
  }
  const busy = total - (areas.get("(idle)") || 0);
  const pct = (us) => `${((100 * us) / total).toFixed(1)}%`;
  console.log(
    `\n## ${path.basename(file)}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s not idle`,
  );
  console.log("\nself time by area:");
  for (const [k, us] of [...areas].sort((x, y) => y[1] - x[1]).slice(0, 15)) {
    console.log(`  ${pct(us).padStart(6)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
  }
  console.log(`\ntop ${top} functions by self time:`);
  for (const [k, v] of [...fn].sort((x, y) => y[1].us - x[1].us).slice(0, top)) {
    console.log(`  ${pct(v.us).padStart(6)}  ${(v.us / 1000).toFixed(0).padStart(6)} ms  ${k}  [${v.area}]`);
  }
}
