/**
 * Hostile raw AMQP publishes (RELIABILITY §2.10 A1, A2, A6; hazard C13): pickles, YAML tags,
 * revival markers, invalid UTF-8 and empty bodies published straight to the work queue with
 * amqplib, plus forged `x-delivery-count` / `x-death` headers. Every rejected message must be
 * dead-lettered (never acked and dropped), nothing runs, the worker keeps serving.
 */
import { afterEach, describe, expect, it } from "vitest";
import { Chicory, MemoryBackend, Worker } from "../../src/index.js";
import { SERVICES, skipUnless } from "../helpers/services.js";
import { deleteQueues, testBroker } from "../integration/rabbitmq/rabbitmq-test-utils.js";
import { canary, eventually, hostileBodies, messageBody, recordingLogger } from "./security-helpers.js";

const skip = await skipUnless("rabbitmq");

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function setup(useDeadLetterQueue = true) {
  const broker = testBroker({ claimMinIdleMs: 2000 });
  cleanups.push(() => deleteQueues(broker));
  const app = new Chicory({ broker, backend: new MemoryBackend(), config: { env: {} } });
  const ran: unknown[][] = [];
  const probe = app.task({ name: "probe" }, async (...args: unknown[]) => {
    ran.push(args);
    return args;
  });
  const logger = recordingLogger();
  const worker = new Worker(app, { concurrency: 4, useDeadLetterQueue, logger });
  await worker.start();
  cleanups.push(() => worker.stop(2));
  // the work queue is declared once the worker consumes it
  await eventually(async () => (await broker.getConsumerCount("default")) > 0, 10_000, "consumer registered");
  const amqp = await import("amqplib");
  const connection = await amqp.connect(SERVICES.rabbitmq);
  cleanups.push(() => connection.close());
  const channel = await connection.createConfirmChannel();
  const queue = `${broker.settings.prefix}.default`;
  const publishRaw = async (body: Buffer | string, headers: Record<string, unknown> = {}) => {
    channel.sendToQueue(queue, typeof body === "string" ? Buffer.from(body, "utf8") : body, {
      persistent: true,
      headers,
    });
    await channel.waitForConfirms();
  };
  const stillServes = async () => {
    const r = await probe.delay("still");
    expect(await r.get({ timeout: 10 })).toEqual(["still"]);
  };
  return { broker, app, probe, ran, worker, publishRaw, stillServes, logger };
}

describe.skipIf(skip)("rabbitmq: hostile raw publishes", () => {
  it("A1/A2: pickles, YAML tags, revival markers, invalid UTF-8, empty body: dead-lettered, never run", async () => {
    const s = await setup();
    const c = canary();
    cleanups.push(() => c.remove());
    const bodies = hostileBodies(c.path, "q1");
    for (const body of Object.values(bodies)) await s.publishRaw(body);
    await s.publishRaw(Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28]));
    const asData = Object.keys(bodies).filter((label) => label.endsWith("InArgs")).length;
    const rejected = Object.keys(bodies).length - asData + 1;
    await eventually(async () => (await s.broker.getDlqCount("default")) === rejected, 15_000, "all dead-lettered");
    await eventually(() => s.ran.length === asData, 5000);
    const errors = (await s.broker.getDlqMessages("default", 100)).map((m) => m.error);
    for (const e of errors) expect(e).toMatch(/decode_error|schema_error|empty_body|TaskNotFoundError/);
    expect(errors.some((e) => e.includes("not valid UTF-8"))).toBe(true);
    expect(c.fired()).toBe(false);
    expect(await s.broker.getQueueSize("default")).toBe(0);
    await s.stillServes();
  }, 30_000);

  it("an empty or non-UTF-8 body with the worker's DLQ off: rejected as any undecodable message (acknowledged and logged), never run", async () => {
    const s = await setup(false);
    await s.publishRaw(Buffer.alloc(0));
    await s.publishRaw(Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28]));
    const rejected = () =>
      s.logger.lines
        .map((line) => JSON.parse(line) as { msg: string; error?: string })
        .filter((l) => l.msg === "message rejected");
    await eventually(() => rejected().length === 2, 10_000, "both rejected");
    expect(
      rejected()
        .map((l) => l.error)
        .sort(),
    ).toEqual(["decode_error: the message body is not valid UTF-8", "empty_body: the message has no body"]);
    expect(s.ran).toEqual([]);
    expect(await s.broker.getQueueSize("default")).toBe(0);
    expect(await s.broker.getDlqCount("default")).toBe(0);
    await s.stillServes();
  }, 30_000);

  it("A6: forged x-delivery-count / x-death headers on a first delivery do not make a job poison", async () => {
    const s = await setup();
    await s.publishRaw(messageBody("forged-count", "probe", ["a"]), {
      "x-delivery-count": 999,
      "x-death": [{ count: 999, reason: "rejected", queue: "x" }],
    });
    await s.publishRaw(messageBody("forged-count-text", "probe", ["b"]), { "x-delivery-count": "999" });
    await eventually(() => s.ran.length === 2, 10_000, "forged-header jobs ran");
    expect(await s.broker.getDlqCount("default")).toBe(0);
    await s.stillServes();
  }, 30_000);
});
