/**
 * Helpers shared by the contract suites: building real task messages, polling a condition
 * with a deadline, and fetching with deadlines instead of fixed sleeps.
 */
import { expect } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import type { Broker, BrokerCapabilities, Consumer, Delivery } from "../../src/brokers/broker.js";
import type { JsonValue } from "../../src/core/json.js";
import type { MessageCodec, TaskMessage } from "../../src/core/message.js";
import { uniqueName } from "../helpers/services.js";

/** Resolves after `ms` milliseconds. Prefer {@link eventually} where a condition can be polled. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `fn` until it resolves without throwing (an assertion that passes) and to anything but
 * `false` (a condition that holds), and returns its value; once `timeoutMs` passed, rethrows the
 * last error or fails with "condition still false".
 */
export async function eventually<T>(fn: () => T | Promise<T>, timeoutMs = 5000, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await fn();
      if (value !== false) return value;
      if (Date.now() >= deadline) throw new Error(`condition still false after ${timeoutMs} ms`);
    } catch (error) {
      if (Date.now() >= deadline) throw error;
    }
    await sleep(intervalMs);
  }
}

/** A SUCCESS record of `taskId` holding `result`, stamped now. */
export function successRecord(taskId: string, result: JsonValue): TaskRecord {
  return { taskId, state: "SUCCESS", result, updatedAt: new Date().toISOString() };
}

/** A valid task message with a random id. */
export function taskMessage(overrides: Partial<TaskMessage> = {}): TaskMessage {
  return {
    v: 1,
    id: uniqueName("task-"),
    name: "contract.task",
    args: [1, "two", { three: 3 }],
    retries: 0,
    eta: null,
    priority: null,
    firstFailureAt: null,
    lastError: null,
    ...overrides,
  };
}

/** An encoded task message ready to publish. */
export interface EncodedTask {
  readonly id: string;
  readonly body: string;
  readonly message: TaskMessage;
}

/** Builds and encodes a task message with `codec`. */
export function encodeTask(codec: MessageCodec, overrides: Partial<TaskMessage> = {}): EncodedTask {
  const message = taskMessage(overrides);
  return { id: message.id, body: codec.encode(message), message };
}

/** Publishes encoded tasks one after the other (awaiting each) and returns them. */
export async function publishTasks(
  broker: Broker,
  queue: string,
  codec: MessageCodec,
  count: number,
  overrides: Partial<TaskMessage> = {},
): Promise<EncodedTask[]> {
  const tasks: EncodedTask[] = [];
  for (let i = 0; i < count; i++) {
    const task = encodeTask(codec, overrides);
    const result = await broker.publish(queue, { id: task.id, body: task.body });
    if (!result.published) throw new Error(`publish of ${task.id} returned published=false`);
    tasks.push(task);
  }
  return tasks;
}

/**
 * Fetches until exactly `count` deliveries arrived (never asking for more than remain, and
 * at most `maxPerFetch` per call); throws when `timeoutMs` passes first or a fetch returns
 * more than it was asked for.
 */
export async function fetchN(
  consumer: Consumer,
  count: number,
  timeoutMs = 5000,
  maxPerFetch = count,
): Promise<Delivery[]> {
  const got: Delivery[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < count) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`expected ${count} deliveries within ${timeoutMs} ms, got ${got.length}`);
    const max = Math.min(maxPerFetch, count - got.length);
    const batch = await consumer.fetch(max, AbortSignal.timeout(left));
    if (batch.length > max) throw new Error(`fetch(${max}) returned ${batch.length} deliveries`);
    got.push(...batch);
  }
  return got;
}

/** Fetches exactly one delivery within `timeoutMs`. */
export async function fetchOne(consumer: Consumer, timeoutMs = 5000): Promise<Delivery> {
  const [delivery] = await fetchN(consumer, 1, timeoutMs);
  if (!delivery) throw new Error("no delivery");
  return delivery;
}

/**
 * Keeps fetching for `forMs` milliseconds and throws if any delivery arrives (the
 * deliveries are returned in the error message by body prefix for debugging).
 */
export async function expectNoDelivery(consumer: Consumer, forMs: number, max = 10): Promise<void> {
  const deadline = Date.now() + forMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return;
    const batch = await consumer.fetch(max, AbortSignal.timeout(left));
    if (batch.length > 0) {
      const shown = batch.map((d) => `${d.body.slice(0, 60)} (deliveryCount ${d.deliveryCount})`).join(", ");
      throw new Error(`expected no delivery for ${forMs} ms, got ${batch.length}: ${shown}`);
    }
  }
}

/** Skips the running test with a printed reason unless the broker has `capability`. */
export function requireCapability(
  skip: (condition: boolean, note?: string) => void,
  broker: Broker,
  capability: keyof BrokerCapabilities,
): void {
  if (broker.capabilities[capability]) return;
  const note = `broker "${broker.kind}" lacks capability ${capability}`;
  console.info(`skipped: ${note}`);
  skip(true, note);
}

/** Strings that must survive every store byte for byte. */
export const TRICKY_STRINGS: readonly string[] = [
  "héllo wörld ñ ç 世界 Привет مرحبا",
  "emoji 🎉🦀👩‍👩‍👧‍👦 𝄞 𠜎",
  `quotes "double" 'single' \`back\` \\ backslash \\" escaped`,
  "nul \u0000 in \u0000 the middle \u0000",
  "controls \n\r\t\b\f \u0001\u001f \u2028\u2029 \uFEFF",
  'json-ish {"a":1} [1,2] null true',
  "<script>alert(1)</script> ' OR 1=1 -- ; DROP TABLE x; $1 %s {0}",
];

/** A broker or a backend, as far as connecting goes. */
interface Connectable {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  healthcheck(): Promise<{ connected: boolean }>;
}

/** A `connect()` called while a `disconnect()` of `adapter` is under way opens once that is done. */
export async function expectOpenAfterDisconnectUnderWay(adapter: Connectable): Promise<void> {
  const order: string[] = [];
  const closing = adapter.disconnect().then(() => order.push("disconnected"));
  const opening = adapter.connect().then(() => order.push("connected"));
  await Promise.all([closing, opening]);
  expect(order).toEqual(["disconnected", "connected"]);
  expect((await adapter.healthcheck()).connected).toBe(true);
}

/**
 * A `disconnect()` after a `connect()` still waiting for an earlier disconnect, and after one
 * still opening, leaves `adapter` (a broker or a backend) closed; a connect that rejects says
 * it was overtaken.
 */
export async function expectClosedAfterOvertakenConnects(adapter: Connectable): Promise<void> {
  void adapter.disconnect();
  const waiting = adapter.connect().catch((e: unknown) => e); // waits for that disconnect
  await adapter.disconnect();
  const opening = adapter.connect().catch((e: unknown) => e); // opens
  await adapter.disconnect();
  for (const outcome of await Promise.all([waiting, opening])) {
    if (outcome !== undefined) expect(String((outcome as Error).message)).toMatch(/was disconnected while it ran/);
  }
  expect((await adapter.healthcheck()).connected).toBe(false);
}
