// Plain amqplib reference, adapted from ../shared/bench-peers/drivers/rabbitmq.mjs (same
// protocol use, only the queue name and clean-up differ): the producer publishes each job
// individually on a confirm channel (confirms awaited), workers consume with manual acks and
// prefetch 100 (CONCURRENCY executing at once), results return over direct reply-to
// (amq.rabbitmq.reply-to). Queue non-durable, messages transient.
// System `amqplib-replyq` (diagnostic, not the reference): the same, but results return through
// an ordinary non-durable reply queue `<prefix>.replies` instead of direct reply-to.
import amqp from "amqplib";
import { AMQP_URL, CONCURRENCY, now, runWorkload } from "../lib.mjs";

const PREFETCH = Number(process.env.AMQPLIB_PREFETCH || 100);
const queueOf = (prefix) => `${prefix}.work`;

/** Bounded executor with a local buffer (as in the peers' lib/common.mjs). */
function makeExecutor(concurrency, onDone) {
  const queue = [];
  let inflight = 0;
  const pump = () => {
    while (inflight < concurrency && queue.length) {
      const item = queue.shift();
      inflight++;
      Promise.resolve()
        .then(() => runWorkload(item.w, item.v))
        .then(
          (r) => onDone(item, r, null),
          (e) => onDone(item, null, e),
        )
        .finally(() => {
          inflight--;
          pump();
        });
    }
  };
  return {
    push(item) {
      queue.push(item);
      pump();
    },
  };
}

export async function startWorker({ prefix }) {
  const queue = queueOf(prefix);
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.assertQueue(queue, { durable: false });
  await ch.prefetch(PREFETCH);
  const ex = makeExecutor(CONCURRENCY, (item, r, err) => {
    ch.sendToQueue(item.msg.properties.replyTo, Buffer.from(err ? `ERR:${err.message}` : String(r)), {
      correlationId: item.msg.properties.correlationId,
    });
    ch.ack(item.msg);
  });
  await ch.consume(
    queue,
    (msg) => {
      const { w, v } = JSON.parse(msg.content.toString());
      ex.push({ msg, w, v });
    },
    { noAck: false },
  );
  return {
    async close() {
      try {
        await ch.close();
        await conn.close();
      } catch {}
    },
  };
}

export async function createProducer({ prefix, system }) {
  const queue = queueOf(prefix);
  const replyQueue = system === "amqplib-replyq" ? `${prefix}.replies` : null;
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(queue, { durable: false });
  const pending = new Map();
  let seq = 0;
  if (replyQueue) await ch.assertQueue(replyQueue, { durable: false });
  const replyTo = replyQueue ?? "amq.rabbitmq.reply-to";
  await ch.consume(
    replyTo,
    (msg) => {
      const p = pending.get(msg.properties.correlationId);
      if (p) {
        pending.delete(msg.properties.correlationId);
        p(msg.content.toString());
      }
    },
    { noAck: true },
  );
  return {
    queues: replyQueue ? [queue, replyQueue] : [queue],
    async runBatch(w, n) {
      const ids = Array.from({ length: n }, () => String(++seq));
      const results = ids.map((id) => new Promise((res) => pending.set(id, res)));
      const t0 = now();
      await Promise.all(
        ids.map(
          (id, i) =>
            new Promise((res, rej) => {
              ch.publish("", queue, Buffer.from(JSON.stringify({ w, v: i })), { correlationId: id, replyTo }, (err) =>
                err ? rej(err) : res(),
              );
            }),
        ),
      );
      const t1 = now();
      const vals = await Promise.all(results);
      const t2 = now();
      return { enqueueMs: t1 - t0, resultMs: t2 - t1, sample: vals[n - 1] };
    },
    async close() {
      try {
        await ch.close();
        await conn.close();
      } catch {}
    },
  };
}
