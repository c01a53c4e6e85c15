// Chicory on Redis (Streams broker + Redis result backend), loaded from the BUILT package:
// `dist/` by default (run `npm run build` first), or the folder in CHICORY_DIST (a private
// build, see README). Each benchmark run gets its own key prefix on the bench DB.
//   producer: N individual `task.delay()` calls at once (Promise.all), then every `get()`
//   worker:   `new Worker(app, { concurrency: 32, logger: silentLogger })`
import path from "node:path";
import { pathToFileURL } from "node:url";
import { CONCURRENCY, inWaves, now, REDIS_URL, ROOT, runWorkload } from "../lib/common.mjs";
import { connect } from "../lib/redis.mjs";

const EXPERIMENTS = new Set((process.env.CHICORY_BENCH_EXPERIMENT || "").split(",").filter(Boolean));
// `dist-b`: worker processes load the build in CHICORY_DIST_B (an A/B of two builds in one run;
// the producer, in the benchmark's own process, keeps CHICORY_DIST)
const DIST_DIR = EXPERIMENTS.has("dist-b") ? process.env.CHICORY_DIST_B : process.env.CHICORY_DIST;
const DIST = DIST_DIR ? path.resolve(DIST_DIR) : path.join(path.dirname(ROOT), "dist");
const { Chicory, Worker, silentLogger } = await import(pathToFileURL(path.join(DIST, "index.js")).href);
const { RedisBroker, RedisBackend } = await import(pathToFileURL(path.join(DIST, "redis.js")).href);

/**
 * Worker-side EXPERIMENTS, to estimate the gain of changes suggested in PROFILE.md without
 * touching src/ (never used for the committed comparison, `prefetch` aside):
 * CHICORY_BENCH_EXPERIMENT, comma list
 *   no-started  the worker's STARTED write is skipped
 *   async-ack   delivery.ack() resolves at once (the real ack runs in the background), so the
 *               concurrency slot is freed one round trip earlier
 *   dist-b      not a patch: the worker processes load the build in CHICORY_DIST_B (A/B of two
 *               builds of src/ in the same reps; the producer keeps CHICORY_DIST)
 *   prefetch    not a patch: the product's read-ahead, `new RedisBroker({ prefetch: 32 })` in
 *               the worker (CHICORY_BROKER_REDIS_PREFETCH), reported as its own system
 *   batch-settle  terminal results and acks of one event-loop turn are flushed as ONE pipeline
 *               on one connection: SET key json EX ttl + PUBLISH id per result, then one
 *               XACK + one XDEL per stream with all entry ids (no Lua; no SREM, as no bench job
 *               is `unique`). Approximates fix 1 of PROFILE.md.
 *   second-queue  not a patch: the worker consumes two queues, an idle one first and the
 *               benchmark's second (`queue: ["idle", "default"]`), so each job arrives on a queue
 *               the worker is not the first to read: the multi-queue read path
 * throughput.mjs sets it from a system name like `chicory+no-started+prefetch`.
 */
function batchSettler(app) {
  const conn = connect({ enableAutoPipelining: false });
  const backend = app.backend;
  const prefix = backend.settings.keyPrefix;
  const ttl = backend.settings.resultTtlSeconds;
  const doneChannel = backend.doneChannel ?? `${prefix}:done`; // builds before the per-database channel
  const group = app.broker.settings.consumerGroup;
  let records = [];
  let acks = new Map();
  let waiters = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const [rs, as, ws] = [records, acks, waiters];
    records = [];
    acks = new Map();
    waiters = [];
    const p = conn.pipeline();
    for (const r of rs) {
      const { state, ...rest } = r;
      p.set(`${prefix}:result:${r.taskId}`, JSON.stringify({ state, ...rest }), "EX", ttl);
      p.publish(doneChannel, r.taskId);
    }
    for (const [stream, ids] of as) {
      p.xack(stream, group, ...ids);
      p.xdel(stream, ...ids);
    }
    p.exec().then(
      () => {
        for (const w of ws) w.resolve();
      },
      (e) => {
        for (const w of ws) w.reject(e);
      },
    );
  };
  const enqueue = (add) =>
    new Promise((resolve, reject) => {
      add();
      waiters.push({ resolve, reject });
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
  return {
    store: (record) => enqueue(() => records.push(record)),
    ack: (stream, id) =>
      enqueue(() => {
        if (!acks.has(stream)) acks.set(stream, []);
        acks.get(stream).push(id);
      }),
  };
}

let settler = null;

function applyExperiments(app) {
  if (EXPERIMENTS.has("batch-settle")) {
    settler = batchSettler(app);
    const storeResult = app.backend.storeResult.bind(app.backend);
    const TERMINAL = new Set(["SUCCESS", "FAILURE", "DEAD_LETTERED"]);
    app.backend.storeResult = (record) => (TERMINAL.has(record.state) ? settler.store(record) : storeResult(record));
  }
  if (EXPERIMENTS.has("no-started")) {
    const setState = app.backend.setState.bind(app.backend);
    app.backend.setState = (id, state, extra) => (state === "STARTED" ? Promise.resolve() : setState(id, state, extra));
  }
  if (EXPERIMENTS.has("async-ack") || EXPERIMENTS.has("batch-settle")) {
    const consumerOf = app.broker.consumer.bind(app.broker);
    app.broker.consumer = (options) => wrapConsumer(consumerOf(options));
  }
}

function wrapDelivery(d) {
  if (!EXPERIMENTS.has("async-ack") && !settler) return d;
  return new Proxy(d, {
    get(target, prop) {
      if (prop === "ack") {
        const ack = settler ? () => settler.ack(target.keys.stream, target.deliveryId) : () => target.ack();
        if (!EXPERIMENTS.has("async-ack")) return ack;
        return () => {
          ack().catch(() => {});
          return Promise.resolve();
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

function wrapConsumer(inner) {
  return {
    async fetch(max, signal) {
      return (await inner.fetch(max, signal)).map(wrapDelivery);
    },
    get inFlight() {
      return inner.inFlight;
    },
    close() {
      return inner.close();
    },
  };
}

/** Seconds a `get()` may wait (the scripts' own batch timeouts are shorter). */
const GET_TIMEOUT_S = 900;

function makeApp(queue, brokerOptions = {}) {
  const keyPrefix = queue.replace(/[^A-Za-z0-9._:-]/g, "_").slice(0, 64);
  const app = new Chicory({
    broker: new RedisBroker({ url: REDIS_URL, keyPrefix, ...brokerOptions }),
    backend: new RedisBackend({ url: REDIS_URL, keyPrefix }),
  });
  const work = app.task({ name: "work" }, async (w, v) => runWorkload(w, v));
  return { app, work };
}

export async function startWorker({ queue }) {
  const { app } = makeApp(queue, EXPERIMENTS.has("prefetch") ? { prefetch: CONCURRENCY } : {});
  applyExperiments(app);
  // (the task's queue is "default"; `queue` names the run's key prefix)
  const queues = EXPERIMENTS.has("second-queue") ? ["idle", "default"] : "default";
  const worker = new Worker(app, { concurrency: CONCURRENCY, logger: silentLogger, queue: queues });
  await worker.start();
  return {
    async close() {
      await worker.stop(5);
    },
  };
}

export async function createProducer({ queue }) {
  const { app, work } = makeApp(queue);
  await app.connect();
  return {
    async runBatch(w, n) {
      const t0 = now();
      const handles = await Promise.all(Array.from({ length: n }, (_, i) => work.delay(w, i)));
      const t1 = now();
      const vals = await Promise.all(handles.map((h) => h.get({ timeout: GET_TIMEOUT_S })));
      const t2 = now();
      return { enqueueMs: t1 - t0, resultMs: t2 - t1, sample: vals[n - 1] };
    },
    /** Enqueue only (memory benchmark): `delay()` in waves of 1000. */
    enqueue(w, n) {
      return inWaves(n, (i) => work.delay(w, i));
    },
    async close() {
      await app.disconnect();
    },
  };
}
