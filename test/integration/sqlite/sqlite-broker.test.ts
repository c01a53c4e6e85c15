/**
 * SQLite-specific behaviour of the broker: pragmas, schema versioning, ordering, delays and
 * unique publishes across two connections, injected connections, lifecycle errors.
 */
import Database from "better-sqlite3";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Consumer, Delivery } from "../../../src/brokers/broker.js";
import { SqliteBroker } from "../../../src/brokers/sqlite/index.js";
import {
  openBetterSqlite3,
  type SqliteDatabase,
  type SqliteOpener,
} from "../../../src/brokers/sqlite/sqlite-database.js";
import { BrokerConnectionError, ConfigurationError } from "../../../src/errors.js";
import { uniqueName } from "../../helpers/services.js";
import { removeDb, tempDbPath } from "./sqlite-test-files.js";

async function fetchAll(consumer: Consumer, count: number, maxPerFetch = count): Promise<Delivery[]> {
  const got: Delivery[] = [];
  const deadline = Date.now() + 5000;
  while (got.length < count && Date.now() < deadline) {
    const max = Math.min(maxPerFetch, count - got.length);
    got.push(...(await consumer.fetch(max, AbortSignal.timeout(Math.max(1, deadline - Date.now())))));
  }
  return got;
}

describe("sqlite broker", () => {
  let path = "";
  const cleanups: Array<() => Promise<unknown> | unknown> = [];

  async function connect(options: ConstructorParameters<typeof SqliteBroker>[0] = {}): Promise<SqliteBroker> {
    if (!path) path = tempDbPath();
    const broker = new SqliteBroker({ path, ...options });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    return broker;
  }

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    if (path) removeDb(path);
    path = "";
  });

  it("puts the file in WAL mode with synchronous NORMAL and creates its tables", async () => {
    await connect();
    const db = new Database(path, { readonly: true });
    cleanups.push(() => db.close());
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'chicory_%' ORDER BY name")
      .all()
      .map((row) => (row as { name: string }).name);
    expect(tables).toEqual(["chicory_consumers", "chicory_dlq", "chicory_jobs", "chicory_meta"]);
    const version = db.prepare("SELECT value FROM chicory_meta WHERE key = 'broker_schema_version'").get();
    expect(version).toEqual({ value: "2" });
  });

  it("upgrades a version 1 file: its registrations get the consumer's lease", async () => {
    path = tempDbPath();
    await (await connect()).disconnect();
    const v1 = new Database(path);
    v1.exec("ALTER TABLE chicory_consumers DROP COLUMN lease_ms");
    v1.prepare("UPDATE chicory_meta SET value = '1' WHERE key = 'broker_schema_version'").run();
    v1.prepare("INSERT INTO chicory_consumers (consumer_id, queue, last_seen) VALUES ('old', 'q', 1)").run();
    v1.close();
    const broker = await connect({ claimMinIdleMs: 4321 });
    const consumer = broker.consumer({ queues: ["q"], consumerId: "new" });
    expect(await consumer.fetch(1, AbortSignal.timeout(20))).toEqual([]); // registers
    const db = new Database(path, { readonly: true });
    cleanups.push(() => db.close());
    expect(db.prepare("SELECT value FROM chicory_meta WHERE key = 'broker_schema_version'").get()).toEqual({
      value: "2",
    });
    expect(db.prepare("SELECT consumer_id, lease_ms FROM chicory_consumers ORDER BY consumer_id").all()).toEqual([
      { consumer_id: "new", lease_ms: 4321 },
      { consumer_id: "old", lease_ms: null },
    ]);
    await consumer.close();
  });

  it("applies synchronous FULL on an injected connection and leaves it open on disconnect", async () => {
    path = tempDbPath();
    const db = new Database(path);
    cleanups.push(() => db.close());
    const broker = new SqliteBroker({ database: db as unknown as SqliteDatabase, synchronous: "FULL", path });
    await broker.connect();
    expect(db.pragma("synchronous", { simple: true })).toBe(2); // FULL
    expect(db.pragma("busy_timeout", { simple: true })).toBe(5000);
    await broker.publish("q", { id: "a", body: "a" });
    await broker.disconnect();
    expect(db.open).toBe(true);
    expect(db.prepare("SELECT COUNT(*) AS n FROM chicory_jobs").get()).toEqual({ n: 1 });
  });

  it("refuses a file whose schema is newer than this version", async () => {
    path = tempDbPath();
    await (await connect()).disconnect();
    const db = new Database(path);
    db.prepare("UPDATE chicory_meta SET value = '99' WHERE key = 'broker_schema_version'").run();
    db.close();
    const broker = new SqliteBroker({ path });
    await expect(broker.connect()).rejects.toBeInstanceOf(ConfigurationError);
  });

  it("waits for a lock held by another connection of this process without blocking the event loop", async () => {
    path = tempDbPath();
    const other = new Database(path);
    cleanups.push(() => other.close());
    other.exec("BEGIN IMMEDIATE");
    // the holder commits from a timer: only possible if connect() yields while it waits
    const timer = setTimeout(() => other.exec("COMMIT"), 100);
    cleanups.push(() => clearTimeout(timer));
    const started = Date.now();
    const broker = new SqliteBroker({ path, busyTimeoutMs: 10_000 });
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await broker.publish("q", { id: "a", body: "a" })).toEqual({ published: true });
  });

  it("hands out a batch by priority, then publish order, and queues in preference order", async () => {
    const broker = await connect();
    const [first, second] = [uniqueName("q"), uniqueName("q")];
    await broker.publish(second, { id: "s1", body: "second-queue", priority: 255 });
    await broker.publish(first, { id: "a", body: "low-1", priority: 1 });
    await broker.publish(first, { id: "b", body: "high", priority: 9 });
    await broker.publish(first, { id: "c", body: "low-2", priority: 1 });
    await broker.publish(first, { id: "d", body: "none" });
    const consumer = broker.consumer({ queues: [first, second], consumerId: "c" });
    const got = await consumer.fetch(10, AbortSignal.timeout(2000));
    expect(got.map((d) => d.body)).toEqual(["high", "low-1", "low-2", "none", "second-queue"]);
    for (const d of got) await d.ack();
    await consumer.close();
  });

  it("in a queue of one priority, hands out jobs in the order they became available (a delayed job from its due time)", async () => {
    const broker = await connect();
    const queue = uniqueName("q");
    const publishedAt = Date.now();
    await broker.publish(queue, { id: "late", body: "due-second", delayMs: 300 });
    await broker.publish(queue, { id: "early", body: "due-first", delayMs: 150 });
    // both due before the next publish: no event marks a due time
    await new Promise((resolve) => setTimeout(resolve, 300 - (Date.now() - publishedAt) + 20));
    await broker.publish(queue, { id: "ready", body: "published-after" });
    const consumer = broker.consumer({ queues: [queue], consumerId: "c" });
    const got = await fetchAll(consumer, 3, 1); // one claim each (a claim's batch comes in publish order)
    expect(got.map((d) => d.body)).toEqual(["due-first", "due-second", "published-after"]);
    for (const d of got) await d.ack();
    await consumer.close();
  });

  it("never hands out a delayed job early, also to another connection", async () => {
    const producer = await connect();
    const worker = await connect();
    const queue = uniqueName("q");
    const delayMs = 400;
    const publishedAt = Date.now();
    await producer.publish(queue, { id: "later", body: "later", delayMs });
    await producer.publish(queue, { id: "now", body: "now" });
    const consumer = worker.consumer({ queues: [queue], consumerId: "w" });
    const [now] = await fetchAll(consumer, 1);
    expect(now?.body).toBe("now");
    await now?.ack();
    const [later] = await fetchAll(consumer, 1);
    expect(Date.now() - publishedAt).toBeGreaterThanOrEqual(delayMs);
    expect(later?.body).toBe("later");
    await later?.ack();
    await consumer.close();
  });

  it("unique publish is idempotent across connections, per queue", async () => {
    const a = await connect();
    const b = await connect();
    const queue = uniqueName("q");
    expect(await a.publish(queue, { id: "same", body: "1", unique: true })).toEqual({ published: true });
    expect(await b.publish(queue, { id: "same", body: "2", unique: true })).toEqual({ published: false });
    expect(await b.publish(uniqueName("q"), { id: "same", body: "3", unique: true })).toEqual({ published: true });
    // a non-unique publish is never refused
    expect(await b.publish(queue, { id: "same", body: "4" })).toEqual({ published: true });
    const consumer = b.consumer({ queues: [queue], consumerId: "w" });
    const got = await fetchAll(consumer, 2);
    // a retry keeps the id reserved; dead-lettering frees it
    const unique = got.find((d) => d.body === "1");
    await unique?.retry("1-retried", 60_000);
    expect(await a.publish(queue, { id: "same", body: "5", unique: true })).toEqual({ published: false });
    for (const d of got) if (d !== unique) await d.ack();
    await consumer.close();
  });

  it("wakes a consumer of this process at once when it publishes", async () => {
    const broker = await connect({ pollMinMs: 10_000, pollMaxMs: 10_000 });
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w" });
    const waiting = consumer.fetch(1, AbortSignal.timeout(30_000));
    setTimeout(() => void broker.publish(queue, { id: "x", body: "x" }), 50);
    const started = Date.now();
    const [delivery] = await waiting;
    expect(delivery?.body).toBe("x");
    // with polls 10 s apart, only the in-process notification explains a quick pickup
    expect(Date.now() - started).toBeLessThan(5000);
    await delivery?.ack();
    await consumer.close();
  });

  it("hands out a job delayed by this process on time, not at the next safety check", async () => {
    const broker = await connect({ pollMinMs: 10_000, pollMaxMs: 10_000 });
    const queue = uniqueName("q");
    const consumer = broker.consumer({ queues: [queue], consumerId: "w" });
    expect(await consumer.fetch(1, AbortSignal.timeout(50))).toEqual([]); // idle, nothing due
    const waiting = consumer.fetch(1, AbortSignal.timeout(30_000));
    const publishedAt = Date.now();
    await broker.publish(queue, { id: "d", body: "d", delayMs: 200 });
    const [delivery] = await waiting;
    const elapsed = Date.now() - publishedAt;
    expect(delivery?.body).toBe("d");
    expect(elapsed).toBeGreaterThanOrEqual(200);
    expect(elapsed).toBeLessThan(5000);
    await delivery?.ack();
    await consumer.close();
  });

  it("while idle, checks at most every pollMaxMs and looks for work once a second", async () => {
    const runs = new Map<string, number>();
    const counting: SqliteOpener = async (file, options) => {
      const db = await openBetterSqlite3(file, options);
      return {
        exec: (sql) => db.exec(sql),
        close: () => db.close(),
        prepare(sql) {
          const statement = db.prepare(sql);
          const counted = <T>(result: T): T => {
            runs.set(sql, (runs.get(sql) ?? 0) + 1);
            return result;
          };
          return {
            run: (...params) => counted(statement.run(...params)),
            get: (...params) => counted(statement.get(...params)),
            all: (...params) => counted(statement.all(...params)),
          };
        },
      };
    };
    const broker = await connect({ open: counting, pollMinMs: 5, pollMaxMs: 25, fetchMaxWaitMs: 60_000 });
    const consumer = broker.consumer({ queues: [uniqueName("q")], consumerId: "w" });
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    try {
      const controller = new AbortController();
      const fetching = consumer.fetch(1, controller.signal);
      runs.clear();
      await vi.advanceTimersByTimeAsync(10_000);
      controller.abort();
      await vi.advanceTimersByTimeAsync(0);
      expect(await fetching).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
    const ran = (prefix: string): number =>
      [...runs].filter(([sql]) => sql.startsWith(prefix)).reduce((sum, [, n]) => sum + n, 0);
    // 10 s at one check per 25 ms: 400 reads of data_version (a spinning loop made 10,000)
    expect(ran("PRAGMA data_version")).toBeGreaterThan(300);
    expect(ran("PRAGMA data_version")).toBeLessThanOrEqual(420);
    // the safety net: one look for work per second although nothing changed
    expect(ran("SELECT MIN(available_at)")).toBeGreaterThanOrEqual(9);
    expect(ran("SELECT MIN(available_at)")).toBeLessThanOrEqual(11);
    await consumer.close();
  });

  it("reports use before connect and after disconnect as BrokerConnectionError", async () => {
    path = tempDbPath();
    const broker = new SqliteBroker({ path });
    await expect(broker.publish("q", { id: "a", body: "a" })).rejects.toBeInstanceOf(BrokerConnectionError);
    await expect(broker.getQueueSize("q")).rejects.toBeInstanceOf(BrokerConnectionError);
    expect((await broker.healthcheck()).connected).toBe(false);
    await broker.connect();
    const consumer = broker.consumer({ queues: ["q"], consumerId: "c" });
    const pending = consumer.fetch(1, AbortSignal.timeout(5000));
    await broker.disconnect();
    expect(await pending).toEqual([]); // a waiting fetch ends when the broker disconnects
    await expect(broker.publish("q", { id: "a", body: "a" })).rejects.toBeInstanceOf(BrokerConnectionError);
  });

  it("works on :memory: within one broker", async () => {
    const broker = new SqliteBroker({ url: "sqlite::memory:" });
    expect(broker.capabilities.durable).toBe(false);
    await broker.connect();
    cleanups.push(() => broker.disconnect());
    await broker.publish("q", { id: "a", body: "a" });
    const [delivery] = await fetchAll(broker.consumer({ queues: ["q"], consumerId: "c" }), 1);
    expect(delivery?.body).toBe("a");
    await delivery?.ack();
  });

  it("wraps an unopenable path in BrokerConnectionError", async () => {
    const broker = new SqliteBroker({ path: "/nonexistent-dir-chicory/x/y.db" });
    await expect(broker.connect()).rejects.toBeInstanceOf(BrokerConnectionError);
  });
});
