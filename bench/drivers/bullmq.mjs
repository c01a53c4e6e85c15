// BullMQ (ioredis): one Queue.add() per job; results awaited the idiomatic way
// (QueueEvents + job.waitUntilFinished). Adapted from ../shared/bench-peers/drivers/bullmq.mjs.
import { Queue, QueueEvents, Worker } from "bullmq";
import { CONCURRENCY, inWaves, now, runWorkload } from "../lib/common.mjs";
import { connect } from "../lib/redis.mjs";

export async function startWorker({ queue }) {
  const worker = new Worker(queue, async (job) => runWorkload(job.data.w, job.data.v), {
    connection: connect(),
    concurrency: CONCURRENCY,
  });
  await worker.waitUntilReady();
  return {
    async close() {
      await worker.close();
    },
  };
}

/**
 * BullMQ trims its events stream to 10,000 entries by default; a QueueEvents reader that lags
 * more than that (16,384 jobs on a loaded 2-core machine) misses 'completed' events and
 * `waitUntilFinished` hangs. The timing scripts raise the cap (BULLMQ_EVENTS_MAXLEN, default
 * 100,000); the memory script keeps BullMQ's default (`defaults: true`).
 */
export async function createProducer({ queue, defaults = false }) {
  const maxLen = Number(process.env.BULLMQ_EVENTS_MAXLEN || 100000);
  const q = new Queue(queue, { connection: connect(), ...(defaults ? {} : { streams: { events: { maxLen } } }) });
  const qe = new QueueEvents(queue, { connection: connect() });
  q.setMaxListeners(0);
  qe.setMaxListeners(0);
  await q.waitUntilReady();
  await qe.waitUntilReady();
  return {
    async runBatch(w, n) {
      const t0 = now();
      const jobs = await Promise.all(Array.from({ length: n }, (_, i) => q.add("job", { w, v: i })));
      const t1 = now();
      const vals = await Promise.all(jobs.map((j) => j.waitUntilFinished(qe)));
      const t2 = now();
      return { enqueueMs: t1 - t0, resultMs: t2 - t1, sample: vals[n - 1] };
    },
    /** Enqueue only (memory benchmark). */
    enqueue(w, n) {
      return inWaves(n, (i) => q.add("job", { w, v: i }));
    },
    async close() {
      await qe.close();
      await q.close();
    },
  };
}
