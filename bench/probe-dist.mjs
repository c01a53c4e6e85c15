// Copies a build (dist/) and inserts probes on a job's settle path in the worker: each probe
// records the time it is passed (`globalThis.__probe`, defined by lib/io-times.mjs, which the
// worker of latency-split.mjs preloads). latency-split.mjs then prints, per probe, the median
// time from the handler's start to the first pass at or after it (before the worker's next
// socket write). A diagnostic for PROFILE.md; the copy is not a build to ship.
//   node bench/probe-dist.mjs [--from=dist] [--to=.tmp/dist-probe]
//   CHICORY_DIST_B=.tmp/dist-probe node bench/latency-split.mjs --systems=chicory+dist-b --jobs=1500
// Each probe goes after the line of the built code that is its anchor when that line opens a
// block (a function's first line), else before it; an anchor found in no file, or in two,
// stops the copy.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "./lib/common.mjs";

const a = parseArgs();
const from = path.resolve(a.from || "dist");
const to = path.resolve(a.to || ".tmp/dist-probe");
/** [label, anchor, (optional) a line's start the anchor is the first one after]: in the order a job passes them. */
const PROBES = [
  ["handler returned", "    if (isThenable(value)) {"],
  ["outcome planned", "    this.#slots.settle("],
  ["settler.ack()", "  ack(d, confirm = false, record) {"],
  ["consumer.fetch()", "  async fetch(max, signal) {", "var RedisConsumer = "],
  ["#fetchInto()", "  async #fetchInto(conn, max, signal, out) {", "var RedisConsumer = "],
  ["sendWaitingAcks()", "  sendWaitingAcks() {"],
  ["#ackBatch()", "  async #ackBatch(waiting, readCount) {"],
  ["storeResultsCall()", "  storeResultsCall(records, jsons) {"],
  ["runScript()", "function runScript(client, name, keys, args) {"],
];

fs.rmSync(to, { recursive: true, force: true });
fs.cpSync(from, to, { recursive: true });
const files = fs
  .readdirSync(to, { recursive: true })
  .filter((f) => String(f).endsWith(".js"))
  .map((f) => path.join(to, String(f)));
const texts = new Map(files.map((f) => [f, fs.readFileSync(f, "utf8")]));
for (const [label, anchor, after] of PROBES) {
  /** Where `anchor` is in `lines` (after the line starting with `after`, when given), or -1. */
  const find = (lines) => {
    const from = after === undefined ? 0 : lines.findIndex((line) => line.startsWith(after));
    return from === -1 ? -1 : lines.indexOf(anchor, from);
  };
  const hits = [...texts].filter(([, text]) => find(text.split("\n")) !== -1);
  const [file, text] = hits[0] ?? [];
  const lines = text?.split("\n") ?? [];
  const at = find(lines);
  if (hits.length !== 1 || (after === undefined && lines.indexOf(anchor, at + 1) !== -1)) {
    throw new Error(`probe "${label}": anchor not found exactly once in the build: ${anchor}`);
  }
  lines.splice(anchor.endsWith("{") ? at + 1 : at, 0, `globalThis.__probe?.(${JSON.stringify(label)});`);
  texts.set(file, lines.join("\n"));
}
for (const [file, text] of texts) fs.writeFileSync(file, text);
console.log(`${PROBES.length} probes in ${to}`);
