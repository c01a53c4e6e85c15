/**
 * SQLite broker: what delayed jobs queued ahead cost each claim of ready ones.
 * Publishes N jobs delayed by an hour, then 2,000 ready jobs, and drains the ready ones with one
 * consumer (claims of up to 16, one ack each), timing the drain; N=0 is the baseline.
 *
 * Run: `node --import tsx bench/sqlite-delayed-claim.ts [N ...]` (default: 0 100000).
 */
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteBroker } from "../src/brokers/sqlite/index.js";

const READY = 2000;
const counts = process.argv.slice(2).map(Number);
for (const delayed of counts.length > 0 ? counts : [0, 100_000]) {
  const path = join(tmpdir(), `chicory-bench-delayed-${process.pid}.db`);
  const remove = () => {
    for (const file of [path, `${path}-wal`, `${path}-shm`]) rmSync(file, { force: true });
  };
  remove();
  const broker = new SqliteBroker({ path });
  await broker.connect();
  try {
    for (let i = 0; i < delayed; i++) await broker.publish("q", { id: `d${i}`, body: "{}", delayMs: 3_600_000 });
    for (let i = 0; i < READY; i++) await broker.publish("q", { id: `r${i}`, body: "{}" });
    const consumer = broker.consumer({ queues: ["q"], consumerId: "bench" });
    const started = performance.now();
    let drained = 0;
    let claims = 0;
    while (drained < READY) {
      const batch = await consumer.fetch(16, AbortSignal.timeout(5000));
      claims++;
      drained += batch.length;
      await Promise.all(batch.map((d) => d.ack()));
    }
    const ms = performance.now() - started;
    await consumer.close();
    console.log(
      JSON.stringify({
        delayedAhead: delayed,
        ready: READY,
        claims,
        ms: Math.round(ms),
        msPerClaim: +(ms / claims).toFixed(2),
      }),
    );
  } finally {
    await broker.disconnect();
    remove();
  }
}
