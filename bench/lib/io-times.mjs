// Preload (`node --import ./bench/lib/io-times.mjs`) or import: records the wall-clock time
// (performance.timeOrigin + now, ms) of every socket write (net.Socket#write) and every 'data'
// event of this process, and of each probe passed (below). A worker process (argv[2] = driver)
// writes them on exit to `${IO_TIMES_DIR}/io-<pid>.json` when IO_TIMES_DIR is set. Diagnostic
// for latency-split.mjs.
import fs from "node:fs";
import net from "node:net";

/** Times of this process's socket writes and reads, in order. */
export const ioTimes = { writes: [], reads: [], probes: {} };
const clock = () => performance.timeOrigin + performance.now();
// Probes of a build from probe-dist.mjs: the times each label was passed, in order.
globalThis.__probe = (label) => {
  ioTimes.probes[label] ??= [];
  ioTimes.probes[label].push(clock());
};
const write = net.Socket.prototype.write;
net.Socket.prototype.write = function (...args) {
  ioTimes.writes.push(clock());
  return write.apply(this, args);
};
const emit = net.Socket.prototype.emit;
net.Socket.prototype.emit = function (event, ...args) {
  if (event === "data") ioTimes.reads.push(clock());
  return emit.call(this, event, ...args);
};
const dir = process.env.IO_TIMES_DIR;
if (dir && process.argv[2]) {
  process.on("exit", () => fs.writeFileSync(`${dir}/io-${process.pid}.json`, JSON.stringify(ioTimes)));
}
