// "Bare bones" Redis Streams job queue with ioredis: the practical ceiling for a Node
// Redis-Streams queue. Adapted from ../shared/bench-peers/drivers/bare-ioredis.mjs.
//   producer: one XADD per job (individual calls; ioredis auto-pipelining batches same-tick writes)
//   worker:   XREADGROUP COUNT<=100 BLOCK 1000 (local buffer <=100, 32 executing at once), then ONE
//             pipeline per completion batch: XACK (all ids) + SET res:<id> EX per job + PUBLISH ids
//   results:  the producer subscribes to the done channel and does one MGET per notification.
// No retries, no leases, no heartbeats, no DLQ: what a queue costs at the very least.
// Variant `bare-ioredis+free-slots` (a diagnostic, not a peer): the worker reads no more entries
// than it has free slots (COUNT = 32 - running), as issue 4 asks of Chicory's default, instead
// of keeping up to 100 ahead.
import { CONCURRENCY, inWaves, makeExecutor, now } from "../lib/common.mjs";
import { connect } from "../lib/redis.mjs";

const GROUP = "g";
const AHEAD = (process.env.CHICORY_BENCH_EXPERIMENT || "").split(",").includes("free-slots") ? CONCURRENCY : 100;
const keys = (q) => ({ stream: `${q}:stream`, done: `${q}:done`, res: (id) => `${q}:res:${id}` });

async function ensureGroup(r, stream) {
  try {
    await r.xgroup("CREATE", stream, GROUP, "0", "MKSTREAM");
  } catch (e) {
    if (!String(e.message).includes("BUSYGROUP")) throw e;
  }
}

export async function startWorker({ queue }) {
  const k = keys(queue);
  const rd = connect();
  const wr = connect();
  await ensureGroup(wr, k.stream);
  const consumer = `c-${process.pid}`;
  let done = [];
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    const batch = done;
    done = [];
    if (!batch.length) return;
    const p = wr.pipeline();
    p.xack(k.stream, GROUP, ...batch.map((d) => d.msgId));
    for (const d of batch) p.set(k.res(d.id), d.r, "EX", 3600);
    p.publish(k.done, batch.map((d) => d.id).join(","));
    p.exec().catch((e) => console.error("flush", e));
  };
  const ex = makeExecutor(CONCURRENCY, (item, r, err) => {
    done.push({ msgId: item.msgId, id: item.id, r: err ? `ERR:${err.message}` : String(r) });
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  });
  let running = true;
  const loop = (async () => {
    while (running) {
      if (ex.load >= AHEAD) {
        await ex.waitForRoom();
        continue;
      }
      const res = await rd
        .xreadgroup("GROUP", GROUP, consumer, "COUNT", AHEAD - ex.load, "BLOCK", 1000, "STREAMS", k.stream, ">")
        .catch((e) => {
          if (running) console.error(e);
          return null;
        });
      if (!res) continue;
      for (const [, entries] of res) {
        for (const [msgId, f] of entries) ex.push({ msgId, id: f[1], w: f[3], v: Number(f[5]) }); // id, w, v
      }
    }
  })();
  return {
    async close() {
      running = false;
      rd.disconnect();
      await loop.catch(() => {});
      wr.disconnect();
    },
  };
}

export async function createProducer({ queue }) {
  const k = keys(queue);
  const cmd = connect({ enableAutoPipelining: true });
  const sub = connect();
  await ensureGroup(cmd, k.stream);
  const pending = new Map();
  let seq = 0;
  await sub.subscribe(k.done);
  sub.on("message", async (_ch, msg) => {
    const ids = msg.split(",").filter((id) => pending.has(id));
    if (!ids.length) return;
    const vals = await cmd.mget(ids.map(k.res));
    ids.forEach((id, i) => {
      const p = pending.get(id);
      if (p) {
        pending.delete(id);
        p(vals[i]);
      }
    });
  });
  const xadd = (id, w, v) => cmd.xadd(k.stream, "*", "id", id, "w", w, "v", String(v));
  return {
    async runBatch(w, n) {
      const t0 = now(); // before the per-job state, as in the other drivers
      const ids = Array.from({ length: n }, () => `${process.pid}-${++seq}`);
      const results = ids.map((id) => new Promise((res) => pending.set(id, res)));
      await Promise.all(ids.map((id, i) => xadd(id, w, i)));
      const t1 = now();
      const vals = await Promise.all(results);
      const t2 = now();
      return { enqueueMs: t1 - t0, resultMs: t2 - t1, sample: vals[n - 1] };
    },
    /** Enqueue only (memory benchmark). */
    enqueue(w, n) {
      return inWaves(n, (i) => xadd(`${process.pid}-${++seq}`, w, i));
    },
    async close() {
      sub.disconnect();
      cmd.disconnect();
    },
  };
}
