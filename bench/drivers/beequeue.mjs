// bee-queue 2.0 (node-redis 3): one createJob().save() per job; results from the queue-level
// 'job succeeded' pub/sub event (bee-queue's own result notification). Worker:
// queue.process(32, handler). Adapted from ../shared/bench-peers/drivers/beequeue.mjs.
import BeeQueue from "bee-queue";
import { CONCURRENCY, inWaves, now, REDIS, runWorkload } from "../lib/common.mjs";

const redis = { host: REDIS.host, port: REDIS.port, db: REDIS.db };

export async function startWorker({ queue }) {
  const q = new BeeQueue(queue, { redis, isWorker: true, getEvents: false, sendEvents: true, removeOnSuccess: false });
  await q.ready();
  q.process(CONCURRENCY, async (job) => runWorkload(job.data.w, job.data.v));
  return {
    async close() {
      await q.close(3000);
    },
  };
}

export async function createProducer({ queue }) {
  // Per-job job.on('succeeded') (storeJobs: true) misses a job that finishes before its save()
  // reply is read, which hangs a batch; the queue-level event plus an "early" map does not.
  const q = new BeeQueue(queue, { redis, isWorker: false, getEvents: true, sendEvents: false, storeJobs: false });
  await q.ready();
  const pending = new Map();
  const early = new Map();
  q.on("job succeeded", (id, result) => {
    const p = pending.get(id);
    if (p) {
      pending.delete(id);
      p(result);
    } else early.set(id, result);
  });
  const track = (job) =>
    new Promise((res) => {
      if (early.has(job.id)) {
        const r = early.get(job.id);
        early.delete(job.id);
        res(r);
      } else pending.set(job.id, res);
    });
  return {
    async runBatch(w, n) {
      const t0 = now();
      const saved = await Promise.all(Array.from({ length: n }, (_, i) => q.createJob({ w, v: i }).save()));
      const results = saved.map(track);
      const t1 = now();
      const vals = await Promise.all(results);
      const t2 = now();
      return { enqueueMs: t1 - t0, resultMs: t2 - t1, sample: vals[n - 1] };
    },
    /** Enqueue only (memory benchmark). */
    enqueue(w, n) {
      return inWaves(n, (i) => q.createJob({ w, v: i }).save());
    },
    async close() {
      await q.close(3000);
    },
  };
}
