/**
 * A Redis that stalls past the client's reply limit, on a redis-server this test starts itself
 * (the stall would hold up every other test on the shared one): the client drops the
 * connection and, once reconnected, sends again the publish it had no reply for, which the
 * stalled Redis still ran. The call's receipt makes the second copy add nothing (plain and
 * delayed and unique publish calls alike) and answer as the first did.
 */
import { Redis } from "ioredis";
import { describe, expect, it, vi } from "vitest";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { defineBrokerScripts } from "../../../src/brokers/redis/redis-scripts.js";
import { MessageCodec } from "../../../src/core/message.js";
import { type RedisClientLike, runScript } from "../../../src/redis/redis-client.js";
import { BASE_REDIS_OPTIONS, readonlyReconnector } from "../../../src/redis/redis-options.js";
import { encodeTask } from "../../contract/contract-helpers.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { useOwnRedis } from "./own-redis.js";

const skip = await skipUnless("redis");

/** Keeps the server busy in a script for `ms` (no other client is served meanwhile). */
const STALL = `
  local function now() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 end
  local until_ms = now() + tonumber(ARGV[1])
  while now() < until_ms do end
  return 1`;

/**
 * Starts a stall of `ms` on `admin`'s server; resolves once it has surely begun (its script sent
 * 50 ms ago: no client can ask Redis anything while it runs), with the stall's own end.
 */
async function stallBegun(admin: Redis, ms: number): Promise<{ ended: Promise<unknown> }> {
  const ended = admin.eval(STALL, 0, ms);
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { ended };
}

describe.skipIf(skip)("redis broker: a publish resent after a stall", () => {
  const cleanups = useCleanups();
  const own = useOwnRedis("resend");

  /**
   * A broker on a client that gives up on a reply after 200 ms (the broker's own connections:
   * 10 s), so a 1.5 s stall is enough to make it drop the connection and send its calls again;
   * and an admin connection.
   */
  async function impatientBroker(keyPrefix: string): Promise<{ admin: Redis; client: Redis; broker: RedisBroker }> {
    const { server } = own;
    const admin = new Redis(server.url);
    cleanups.push(() => admin.disconnect());
    const client = new Redis(server.url, {
      ...BASE_REDIS_OPTIONS,
      reconnectOnError: readonlyReconnector(),
      socketTimeout: 200,
    });
    cleanups.push(() => client.disconnect());
    client.on("error", () => undefined); // the socket timeouts these tests cause
    await client.connect();
    const broker = new RedisBroker({ client, keyPrefix, env: {} });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    return { admin, client, broker };
  }

  it("publishes (plain, delayed, unique) in flight when the client drops a stalled connection are enqueued once", async () => {
    const { admin, client, broker } = await impatientBroker("resend");
    const reconnects: number[] = [];
    client.on("ready", () => reconnects.push(Date.now()));
    const codec = new MessageCodec();
    const stall = (await stallBegun(admin, 1500)).ended;
    const lone = encodeTask(codec);
    const batch = Array.from({ length: 3 }, () => encodeTask(codec));
    // A delayed one, unique: a resent copy without a receipt found its id taken (by the first
    // copy) and answered "not published" for a job that was; one without `unique` could be
    // scheduled twice when the first was moved to the stream in between.
    // The same for a unique one without a delay (a call of its own).
    const delayed = encodeTask(codec);
    const unique = encodeTask(codec);
    const published = [
      broker.publish("q", { id: lone.id, body: lone.body }),
      ...batch.map((t) => broker.publish("q2", { id: t.id, body: t.body })),
      broker.publish("q3", { id: delayed.id, body: delayed.body, delayMs: 60_000, unique: true }),
      broker.publish("q4", { id: unique.id, body: unique.body, unique: true }),
    ];
    await stall;
    expect(await Promise.all(published)).toEqual(Array(6).fill({ published: true }));
    expect(await admin.zcard("resend:delayed:{q3}")).toBe(1);
    expect(await admin.xlen("resend:stream:{q4}")).toBe(1);
    expect(reconnects.length).toBeGreaterThan(0); // the connection was dropped and made again
    expect(await admin.xlen("resend:stream:{q}")).toBe(1); // before: 2 (the first copy and the resent one)
    expect(await admin.xlen("resend:stream:{q2}")).toBe(3); // before: 6
    // The receipts expire (60 s): they do not pile up.
    const receipts = await admin.keys("resend:sent:*");
    expect(receipts.length).toBe(4);
    for (const key of receipts) expect(await admin.pttl(key)).toBeGreaterThan(0);
  });

  it("an at_most_once job's dead letter in flight when the client drops a stalled connection is written once; a DLQ replay or purge, or a queue purge's batch, sent twice acts once and answers as the first did both times", async () => {
    const { admin, broker } = await impatientBroker("resend-dl");
    const codec = new MessageCodec();
    const letter = encodeTask(codec);
    const stall = (await stallBegun(admin, 1500)).ended;
    const written = broker.writeDeadLetter("q", letter.body, "failed");
    await stall;
    await written;
    expect(await admin.xlen("resend-dl:dlq:{q}")).toBe(1); // before: 2 (the first copy and the resent one)
    // A replay's call sent twice (as the client resends one whose reply it lacked) answers
    // "replayed" both times and enqueues once (before, the second copy found the entry gone and
    // answered 0: the caller was told nothing was replayed)
    const [entry] = await broker.getDlqMessages("q", 10);
    const raw = admin as unknown as RedisClientLike;
    defineBrokerScripts(raw);
    const keys = ["resend-dl:dlq:{q}", "resend-dl:stream:{q}", "resend-dl:unique:{q}", "resend-dl:sent:{q}:rp.test"];
    const args = [entry?.messageId as string, letter.body, letter.id, 60_000];
    expect(await runScript(raw, "chicoryReplay", keys, args)).toBe(1);
    expect(await runScript(raw, "chicoryReplay", keys, args)).toBe(1);
    expect(await admin.xlen("resend-dl:dlq:{q}")).toBe(0);
    expect(await admin.xlen("resend-dl:stream:{q}")).toBe(1);
    // A DLQ purge sent twice deletes only what the first copy found (before, the second copy
    // deleted the dead letters written in between)
    await broker.writeDeadLetter("q", encodeTask(codec).body, "failed");
    const purge = [["resend-dl:dlq:{q}", "resend-dl:sent:{q}:pd.test"], [60_000]] as const;
    expect(await runScript(raw, "chicoryPurgeDlq", purge[0], purge[1])).toBe(1);
    await broker.writeDeadLetter("q", encodeTask(codec).body, "failed later");
    expect(await runScript(raw, "chicoryPurgeDlq", purge[0], purge[1])).toBe(1);
    expect(await admin.xlen("resend-dl:dlq:{q}")).toBe(1);
    // A queue purge's batch sent twice answers as the first did (before, the second copy found
    // nothing and answered 0: the purge reported too few)
    const purgeQueue = [
      ["stream", "delayed", "delayed-data", "unique"]
        .map((k) => `resend-dl:${k}:{q}`)
        .concat("resend-dl:sent:{q}:pq.test"),
      ["chicory", 1000, "chicory:released", 60_000],
    ] as const;
    expect(await runScript(raw, "chicoryPurgeQueue", purgeQueue[0], purgeQueue[1])).toBe(1); // the replayed entry
    expect(await runScript(raw, "chicoryPurgeQueue", purgeQueue[0], purgeQueue[1])).toBe(1);
    expect(await admin.xlen("resend-dl:stream:{q}")).toBe(0);
  });

  it("a retry in flight when the client drops a stalled connection is still moved into its stream by this process when due", async () => {
    const { admin, client, broker } = await impatientBroker("resend-retry");
    const reconnects: number[] = [];
    client.on("ready", () => reconnects.push(Date.now()));
    const codec = new MessageCodec();
    const task = encodeTask(codec);
    await broker.publish("q", { id: task.id, body: task.body });
    const consumer = broker.consumer({ queues: ["q"], consumerId: "w-retry" });
    cleanups.push(() => consumer.close());
    const [delivery] = await consumer.fetch(1, new AbortController().signal);
    expect(delivery?.body).toBe(task.body);
    // The stalled Redis runs the retry's first copy after the stall; the copy the client sends
    // again once reconnected finds the entry gone and answers 0. The consumer fetches nothing
    // more, so only the broker's due mover moves the new attempt (before: it was noted only
    // when the call answered 1, and the attempt stayed in the delayed set until a worker's
    // recheck: here, for good).
    const stall = (await stallBegun(admin, 1500)).ended;
    const retried = delivery?.retry(task.body, 1000);
    await stall;
    await retried;
    expect(reconnects.length).toBeGreaterThan(0); // the connection was dropped and made again
    expect(await admin.zcard("resend-retry:delayed:{q}")).toBe(1);
    await vi.waitFor(async () => expect(await admin.xlen("resend-retry:stream:{q}")).toBe(1), {
      timeout: 5000,
      interval: 50,
    });
    expect(await admin.zcard("resend-retry:delayed:{q}")).toBe(0);
  });

  it("receipts outlast a publish time limit over a minute (a Cluster sends a call again until past it)", async () => {
    const { server } = own;
    const admin = new Redis(server.url);
    cleanups.push(() => admin.disconnect());
    const codec = new MessageCodec();
    const ttls = async (keyPrefix: string, publishTimeoutMs?: number): Promise<number[]> => {
      const broker = new RedisBroker({ url: server.url, keyPrefix, env: {}, publishTimeoutMs });
      await broker.connect();
      cleanups.push(() => broker.disconnect());
      const [plain, delayed, unique] = [encodeTask(codec), encodeTask(codec), encodeTask(codec)];
      await broker.publish("q", { id: plain.id, body: plain.body });
      await broker.publish("q", { id: delayed.id, body: delayed.body, delayMs: 60_000 });
      await broker.publish("q", { id: unique.id, body: unique.body, unique: true });
      const keys = await admin.keys(`${keyPrefix}:sent:*`);
      expect(keys.length).toBe(3);
      return Promise.all(keys.map((key) => admin.pttl(key)));
    };
    for (const ttl of await ttls("receipt-default")) expect(ttl > 55_000 && ttl <= 60_000, `${ttl}`).toBe(true);
    for (const ttl of await ttls("receipt-long", 120_000)) expect(ttl > 120_000 && ttl <= 125_000, `${ttl}`).toBe(true);
  });
});
