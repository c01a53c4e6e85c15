/**
 * Hostile input against the codec and an in-process worker on the memory broker
 * (RELIABILITY §2.10 A1-A6, A11; §3.5 P2-P6): code-revival payloads, registry bypass,
 * prototype pollution, oversize and deep payloads, forged control fields, forged signatures.
 * Every hostile message must end in the DLQ with a reason and never run; the worker keeps
 * serving valid jobs.
 */
import { createRequire } from "node:module";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Delivery } from "../../src/brokers/broker.js";
import { MessageCodec } from "../../src/core/message.js";
import { MessageTooLargeError, TaskNotFoundError, ValidationError, type Worker } from "../../src/index.js";
import { runDelivery } from "../../src/worker/runner.js";
import {
  canary,
  eventually,
  hostileBodies,
  memoryApp,
  messageBody,
  pollutedNow,
  prototypeSnapshot,
  recordingLogger,
  startWorker,
} from "./security-helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function setup(config: Parameters<typeof memoryApp>[0] = {}) {
  const env = memoryApp(config);
  cleanups.push(() => env.app.disconnect());
  const logLines: string[] = [];
  const worker: Worker = await startWorker(env.app, { logger: recordingLogger(logLines) });
  cleanups.push(() => worker.stop(2));
  const dlqErrors = async (): Promise<Map<string, string>> => {
    const out = new Map<string, string>();
    for (const m of await env.broker.getDlqMessages("default", 10_000)) {
      const id = typeof m.originalMessage?.id === "string" ? m.originalMessage.id : m.body.slice(0, 40);
      out.set(id, m.error);
    }
    return out;
  };
  /** Publishes a raw body, bypassing the client (as an attacker with broker access would). */
  const inject = (id: string, body: string) => env.broker.publish("default", { id, body });
  /** Runs a valid job end to end: proves the worker still serves. */
  const stillServes = async () => {
    const r = await env.ok.delay(21);
    expect(await r.get({ timeout: 5 })).toBe(42);
  };
  return { ...env, worker, dlqErrors, inject, stillServes, logLines };
}

describe("A1/A2: code-revival payloads are data, never code", () => {
  it("pickles, YAML tags, $type/__class__ markers: dead-lettered with a decode/schema reason, canary not created", async () => {
    const s = await setup();
    const c = canary();
    cleanups.push(() => c.remove());
    const bodies = hostileBodies(c.path, "a1");
    for (const [label, body] of Object.entries(bodies)) {
      await s.inject(label, typeof body === "string" ? body : body.toString("latin1"));
    }
    // the two well-formed messages for the registered probe carry $type/__class__ in their args
    const asData = Object.keys(bodies).filter((label) => label.endsWith("InArgs")).length;
    await eventually(async () => (await s.broker.getDlqCount("default")) === Object.keys(bodies).length - asData);
    await eventually(() => s.ran.length === asData);
    const dlq = await s.broker.getDlqMessages("default", 100);
    const reasons = dlq.map((m) => m.error);
    for (const reason of reasons) expect(reason).toMatch(/decode_error|schema_error|TaskNotFound|not registered/);
    // ... and reach the probe only as plain data
    for (const args of s.ran) for (const arg of args) expect(Object.getPrototypeOf(arg)).toBe(Object.prototype);
    expect(c.fired()).toBe(false);
    expect(reasons.filter((r) => r.includes("decode_error")).length).toBeGreaterThanOrEqual(4);
    await s.stillServes();
    expect(s.worker.isRunning).toBe(true);
  });

  it("$type/__class__ objects inside the args of a registered task arrive as inert plain objects", async () => {
    const s = await setup();
    await s.inject(
      "inert",
      messageBody("inert", "probe", [{ $type: "Function", body: "() => 1" }, { __class__: "os.system" }]),
    );
    await eventually(() => s.ran.length === 1);
    const [first, second] = s.ran[0] as [Record<string, unknown>, Record<string, unknown>];
    expect(typeof first.body).toBe("string");
    expect(Object.getPrototypeOf(first)).toBe(Object.prototype);
    expect(second).toEqual({ __class__: "os.system" });
  });
});

describe("A3: registry bypass", () => {
  // valid by the name rule (`:` is allowed), so they reach the registry lookup
  const NAMES_OK_SHAPE = [
    "constructor",
    "__proto__",
    "toString",
    "hasOwnProperty",
    "child_process",
    "node:child_process",
    "fs",
    "valueOf",
  ];
  const NAMES_BAD_SHAPE = ["../../etc/passwd", "", "x".repeat(10 * 1024), "a b", "π", "a\u0000b"];

  it("unknown and prototype-named tasks: TaskNotFound / schema_error in the DLQ, no module loaded", async () => {
    const s = await setup();
    const req = createRequire(import.meta.url);
    // warm-up: the first unknown task loads whatever the rejection path needs
    await s.inject("warm", messageBody("warm", "warm_unknown", []));
    await eventually(async () => (await s.broker.getDlqCount("default")) === 1);
    const modulesBefore = [...(process as unknown as { moduleLoadList: string[] }).moduleLoadList];
    const cacheBefore = Object.keys(req.cache).sort();
    for (const [i, name] of [...NAMES_OK_SHAPE, ...NAMES_BAD_SHAPE].entries()) {
      await s.inject(`n${i}`, messageBody(`n${i}`, name, []));
    }
    const total = 1 + NAMES_OK_SHAPE.length + NAMES_BAD_SHAPE.length;
    await eventually(async () => (await s.broker.getDlqCount("default")) === total);
    const dlq = await s.dlqErrors();
    for (const [i] of NAMES_OK_SHAPE.entries()) expect(dlq.get(`n${i}`)).toMatch(/TaskNotFoundError: task ".*" is not/);
    for (const [j] of NAMES_BAD_SHAPE.entries()) {
      expect(dlq.get(`n${NAMES_OK_SHAPE.length + j}`)).toMatch(/MessageRejected: schema_error: name must be/);
    }
    const modulesAfter = (process as unknown as { moduleLoadList: string[] }).moduleLoadList;
    expect(modulesAfter.slice(modulesBefore.length)).toEqual([]);
    expect(Object.keys(req.cache).sort()).toEqual(cacheBefore);
    expect(s.ran.length).toBe(0);
    // their state is recorded as dead-lettered, not run
    expect((await s.backend.getResult("n0"))?.state).toBe("DEAD_LETTERED");
    await s.stillServes();
  });

  it("the API refuses such names at registration and lookup", () => {
    const { app } = memoryApp();
    for (const name of NAMES_BAD_SHAPE.filter(Boolean)) {
      expect(() => app.task({ name }, async () => 1), name.slice(0, 20)).toThrow(ValidationError);
    }
    expect(() => app.task({ name: "" }, async () => 1)).toThrow(/task name "" is invalid/);
    for (const name of NAMES_OK_SHAPE) expect(() => app.getTask(name)).toThrow(TaskNotFoundError);
  });
});

describe("A4: prototype pollution", () => {
  function hostileBody(i: number): string {
    const id = `pp${i}`;
    const deep = (depth: number, leaf: string): string =>
      depth === 0 ? leaf : `{"a":${deep(depth - 1, leaf)},"__proto__":{"depth${depth}":1}}`;
    const poison = `{"polluted":"yes","isAdmin":true,"toString":"x"}`;
    const kind = i % 10;
    const head = `"v":1,"id":"${id}","retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null`;
    switch (kind) {
      case 0:
        return `{"__proto__":${poison},${head},"name":"probe","args":[]}`;
      case 1:
        return `{${head},"name":"probe","args":[{"__proto__":${poison}}]}`;
      case 2:
        return `{${head},"name":"probe","args":[{"constructor":{"prototype":${poison}}}]}`;
      case 3:
        return `{${head},"name":"probe","args":[${deep(50, `{"__proto__":${poison}}`)}]}`;
      case 4:
        return `{${head},"name":"probe","args":[{"a":1,"__proto__":${poison},"__proto__":${poison}}]}`;
      case 5:
        return `{${head},"name":"__proto__","args":[{"__proto__":${poison}}]}`;
      case 6:
        return `{${head},"name":"constructor","args":[]}`;
      case 7:
        return `{"v":1,"id":"__proto__","name":"probe","args":[{"__proto__":${poison}}],"retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null}`;
      case 8:
        return `{${head},"name":"probe","args":[[{"__proto__":[]}],{"prototype":{"polluted":1}}],"constructor":{"prototype":${poison}}}`;
      default:
        return `{${head},"name":"probe","args":["__proto__","constructor.prototype.polluted"]}`;
    }
  }

  it("1,000 hostile messages leave Object.prototype untouched; a probe task sees a clean prototype", async () => {
    const before = prototypeSnapshot();
    const arrayBefore = Object.getOwnPropertyNames(Array.prototype).sort();
    const s = await setup();
    const N = 1000;
    for (let i = 0; i < N; i++) await s.inject(`pp${i}`, hostileBody(i));
    await eventually(
      async () => (await s.broker.getQueueSize("default")) + (await s.broker.getPendingCount("default")) === 0,
      20_000,
      "queue drained",
    );
    expect(prototypeSnapshot()).toEqual(before);
    expect(Object.getOwnPropertyNames(Array.prototype).sort()).toEqual(arrayBefore);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(pollutedNow()).toBe(false);
    const probe = await s.probe.delay();
    expect(await probe.get({ timeout: 5 })).toEqual({ protoKeys: before.length, polluted: false });
    // the registered probe really received the hostile payloads, as inert own data
    expect(s.ran.length).toBeGreaterThan(500);
    const withProtoKey = s.ran.find((args) => {
      const first = args[0] as object | undefined;
      return first !== undefined && first !== null && Object.hasOwn(first, "__proto__");
    });
    expect(withProtoKey).toBeDefined();
    // a task id of "__proto__" is an ordinary id in the backend
    expect((await s.backend.getResult("__proto__"))?.state).toBe("SUCCESS");
    // the names __proto__ / constructor were not found in the registry
    expect((await s.broker.getDlqCount("default")) >= 200).toBe(true);
    await s.stillServes();
  }, 30_000);
});

describe("A5: oversize and deep payloads", () => {
  it("the producer refuses oversize, huge and deep arguments before sending", async () => {
    const s = await setup();
    const limit = s.app.codec.maxMessageBytes;
    await expect(s.probe.delay("x".repeat(limit + 1))).rejects.toBeInstanceOf(MessageTooLargeError);
    await expect(s.probe.delay(new Array(1_000_000).fill(0))).rejects.toBeInstanceOf(MessageTooLargeError);
    let deep: unknown = 0;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    await expect(s.probe.delay(deep)).rejects.toBeInstanceOf(ValidationError);
    expect(await s.broker.getQueueSize("default")).toBe(0);
    await s.stillServes();
  });

  it("a retry of a message close to the size limit is not blocked by its longer lastError", async () => {
    const s = await setup();
    const limit = s.app.codec.maxMessageBytes;
    let attempts = 0;
    const flaky = s.app.task({ name: "flaky", retryPolicy: { maxRetries: 2, retryDelay: 0 } }, async (big: string) => {
      attempts++;
      if (attempts === 1) throw new Error("E".repeat(20_000));
      return big.length;
    });
    const r = await flaky.delay("x".repeat(limit - 400));
    expect(await r.get({ timeout: 5 })).toBe(limit - 400);
    expect(attempts).toBe(2);
  });

  it("the worker rejects by byte length before JSON.parse (1 MiB + 1, 64 MiB), and by depth (10^5)", async () => {
    const s = await setup();
    const limit = s.app.codec.maxMessageBytes;
    const pad = (bytes: number, id: string) => {
      const head = messageBody(id, "probe", []).slice(0, -1);
      const filler = `,"pad":"${"x".repeat(Math.max(0, bytes - head.length - 10))}"`;
      return `${head}${filler}}`.padEnd(bytes, " ");
    };
    const justOver = pad(limit + 1, "over1");
    expect(Buffer.byteLength(justOver)).toBe(limit + 1);
    const huge = `[${"[1,2,3,4],".repeat(64 * 104_857)}0]`; // ~64 MiB of valid JSON
    const deep = `{"v":1,"id":"deep","name":"probe","args":[${"[".repeat(100_000)}${"]".repeat(100_000)}]}`;
    const parseSizes: number[] = [];
    const realParse = JSON.parse;
    const spy = vi
      .spyOn(JSON, "parse")
      .mockImplementation((text: string, reviver?: Parameters<typeof realParse>[1]) => {
        parseSizes.push(text.length);
        return realParse(text, reviver);
      });
    try {
      await s.inject("over1", justOver);
      await s.inject("huge", huge);
      await s.inject("deep", deep);
      await eventually(async () => (await s.broker.getDlqCount("default")) === 3, 10_000);
    } finally {
      spy.mockRestore();
    }
    const errors = (await s.broker.getDlqMessages("default", 10)).map((m) => m.error);
    expect(errors.filter((e) => e.includes("too_large"))).toHaveLength(2);
    expect(errors.filter((e) => e.includes("decode_error") && e.includes("nested deeper"))).toHaveLength(1);
    expect(Math.max(0, ...parseSizes)).toBeLessThanOrEqual(limit);
    expect(s.ran.length).toBe(0);
    await s.stillServes();
  }, 30_000);
});

describe("A6: forged control fields", () => {
  const FORGED: Record<string, Record<string, unknown> | string> = {
    retriesNegative: { retries: -1e9 },
    retriesText: { retries: "x" },
    retriesFloat: { retries: 1.5 },
    retriesHuge: { retries: 1e300 },
    etaFarYear: { eta: "+275760-09-13T00:00:00.000Z" },
    etaText: { eta: "NaN" },
    etaOffsetGarbage: { eta: "2024-01-01T00:00:00+99:99" },
    priorityHuge: { priority: 1e9 },
    priorityNegative: { priority: -1 },
    version2: { v: 2 },
    argsObject: { args: { 0: "a" } },
    idEmpty: { id: "" },
    idHuge: { id: "i".repeat(257) },
    lastErrorObject: { lastError: { toString: "x" } },
    etaNaNLiteral: "NaN-literal",
  };

  it("schema_error (or decode_error for non-JSON literals) in the DLQ; never run", async () => {
    const s = await setup();
    for (const [label, forged] of Object.entries(FORGED)) {
      const body =
        typeof forged === "string" ? messageBody(label, "probe", []).replace('"eta":null', '"eta":NaN') : undefined;
      await s.inject(label, body ?? messageBody(label, "probe", [], forged as Record<string, unknown>));
    }
    const n = Object.keys(FORGED).length;
    await eventually(async () => (await s.broker.getDlqCount("default")) === n);
    for (const m of await s.broker.getDlqMessages("default", 100)) {
      expect(m.error).toMatch(/MessageRejected: (schema_error|decode_error)/);
    }
    expect(s.ran.length).toBe(0);
    await s.stillServes();
  });

  it("poison detection uses the broker's delivery count, never fields of the body", async () => {
    const codec = new MessageCodec();
    const { app, probe, ran } = memoryApp();
    const delivery = (deliveryCount: number, extra: Record<string, unknown>): Delivery => ({
      queue: "default",
      deliveryId: "d",
      body: messageBody("p1", "probe", [], extra),
      deliveryCount,
      ack: async () => {},
      retry: async () => {},
      deadLetter: async () => {},
      release: async () => {},
    });
    const env = {
      codec,
      tasks: app.tasks,
      maxDeliveries: 5,
      maxResultBytes: 1024 * 1024,
      shutdownSignal: new AbortController().signal,
      onStart: async () => {},
    };
    // broker says 6th delivery; the body pretends to be fresh: rejected as poison
    const poison = await runDelivery(delivery(6, { retries: 0, deliveryCount: 0, "x-delivery-count": 0 }), env);
    expect(poison.outcome).toMatchObject({ kind: "rejected", error: { type: "PoisonMessage" } });
    // broker says first delivery; the body claims many deliveries: it runs (extra fields are ignored)
    const fresh = await runDelivery(delivery(1, { deliveryCount: 99, "x-delivery-count": 99 }), env);
    expect(fresh.outcome.kind).toBe("success");
    expect(ran).toHaveLength(1);
    expect(probe.name).toBe("probe");
  });

  it("a forged future eta does not delay or block the queue: delays are the broker's", async () => {
    const s = await setup();
    await s.inject("eta-future", messageBody("eta-future", "probe", ["later"], { eta: "2099-01-01T00:00:00Z" }));
    await eventually(() => s.ran.length === 1);
    await s.stillServes();
  });
});

describe("A11: signing (CHICORY_SIGNING_KEY)", () => {
  it("tampered, wrong-key and unsigned messages are dead-lettered (bad_signature/unsigned) and never run", async () => {
    const s = await setup({ signingKey: "the-real-key" });
    const good = s.app.codec.encode({
      v: 1,
      id: "good",
      name: "probe",
      args: ["ok"],
      retries: 0,
      eta: null,
      priority: null,
      firstFailureAt: null,
      lastError: null,
    });
    const flipAt = good.indexOf('"ok"') + 1;
    const flipped = `${good.slice(0, flipAt)}O${good.slice(flipAt + 1)}`;
    const other = new MessageCodec({ signingKey: "another-key" }).encode({
      ...(JSON.parse(good) as Record<string, unknown>),
      id: "wrongkey",
    } as never);
    const sigFlip = `${good.slice(0, -3)}${good.at(-3) === "A" ? "B" : "A"}${good.slice(-2)}`;
    await s.inject("flipped", flipped.replace('"id":"good"', '"id":"flipped"'));
    await s.inject("flipped2", flipped);
    await s.inject("wrongkey", other);
    await s.inject("sigflip", sigFlip);
    await s.inject("unsigned", messageBody("unsigned", "probe", ["ok"]));
    await s.inject("sigNotString", messageBody("sigNotString", "probe", [], { sig: 42 }));
    await eventually(async () => (await s.broker.getDlqCount("default")) === 6);
    const errors = (await s.broker.getDlqMessages("default", 10)).map((m) => m.error).sort();
    expect(errors.filter((e) => e.includes("bad_signature"))).toHaveLength(4);
    expect(errors.filter((e) => e.includes("unsigned"))).toHaveLength(2);
    expect(s.ran.length).toBe(0);
    // the log names a rejected message by its (unverified) task id and its broker entry id,
    // so that an operator whose keys differ finds it
    const rejected = s.logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === "message rejected");
    expect(rejected).toHaveLength(6);
    expect(rejected.find((l) => l.taskId === "wrongkey")).toMatchObject({
      task: "probe",
      error: expect.stringContaining("bad_signature"),
    });
    expect(rejected.every((l) => typeof l.deliveryId === "string" && l.deliveryId !== "")).toBe(true);
    // the genuine message runs
    await s.inject("good", good);
    await eventually(() => s.ran.length === 1);
    await s.stillServes();
  });
});
