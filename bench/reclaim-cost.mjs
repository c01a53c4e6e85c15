// Redis time of the reclaim step (finding a dead worker's expired entries) against XAUTOCLAIM,
// for pending lists of several lengths, none expired (the common case: every look finds
// nothing): one look through the whole list following the cursor, with 1 and 32 free slots.
// Redis time is INFO commandstats `usec` of the calls (EVALSHA for Chicory's script).
//   node bench/reclaim-cost.mjs [--sizes=64,2000,5000,100000]
// The broker's script module is loaded from the sources (src/, or CHICORY_SRC): the bundled
// build has no module of its own for it.
import { parseArgs } from "./lib/common.mjs";
import { connect } from "./lib/redis.mjs";
import { importSource } from "./lib/source.mjs";

const args = parseArgs();
const SIZES = String(args.sizes ?? "64,2000,5000,100000")
  .split(",")
  .map(Number);
const { defineBrokerScripts } = await importSource("brokers/redis/redis-scripts.ts");
const { runScript } = await importSource("redis/redis-client.ts");
// The consumer's settings (src/brokers/redis/redis-consumer.ts).
const SCAN_LIMIT = 20_000;
const PAGE = 2000;
const LEASE_MS = 600_000;

const r = connect();
defineBrokerScripts(r);
const key = "bench:reclaim-cost";
const PULSE = `${key}:pulse`;

async function usecOf(command) {
  const info = await r.info("commandstats");
  const m = new RegExp(`cmdstat_${command}:calls=(\\d+),usec=(\\d+)`).exec(info);
  return m ? Number(m[2]) : 0;
}

async function sweep(step) {
  let cursor = "0-0";
  let calls = 0;
  do {
    cursor = await step(cursor);
    calls++;
  } while (cursor !== "0-0");
  return calls;
}

for (const n of SIZES) {
  await r.del(key, PULSE);
  for (let i = 0; i < n; i += 5000) {
    const p = r.pipeline();
    for (let k = 0; k < Math.min(5000, n - i); k++) p.xadd(key, "*", "data", "x");
    await p.exec();
  }
  await r.xgroup("CREATE", key, "g", "0");
  // held by seven live consumers
  for (let i = 0; i < n; i += 10_000) {
    await r.call("XREADGROUP", "GROUP", "g", `c${(i / 10_000) % 7}`, "COUNT", 10_000, "STREAMS", key, ">");
  }
  for (const free of [1, 32]) {
    await runScript(r, "chicoryReclaim", [key, PULSE], ["g", "me", LEASE_MS, "0-0", free, SCAN_LIMIT, PAGE, 0, 0, 0]); // loaded
    await r.config("RESETSTAT");
    const calls = await sweep(async (cursor) => {
      const [next] = await runScript(
        r,
        "chicoryReclaim",
        [key, PULSE],
        ["g", "me", LEASE_MS, cursor, free, SCAN_LIMIT, PAGE, 0, 0, 0],
      );
      return next;
    });
    const usec = await usecOf("evalsha");
    await r.config("RESETSTAT");
    const oldCalls = await sweep(async (cursor) => {
      const [next] = await r.call("XAUTOCLAIM", key, "g", "me", LEASE_MS, cursor, "COUNT", free);
      return next;
    });
    const oldUsec = await usecOf("xautoclaim");
    console.log(
      `pending ${n}, ${free} free: Chicory ${calls} call(s), ${(usec / 1000).toFixed(2)} ms ` +
        `(${(usec / calls / 1000).toFixed(2)} ms/call) | XAUTOCLAIM ${oldCalls} calls, ` +
        `${(oldUsec / 1000).toFixed(2)} ms (${(oldUsec / oldCalls / 1000).toFixed(3)} ms/call)`,
    );
  }
}
await r.del(key, PULSE);
r.disconnect();
