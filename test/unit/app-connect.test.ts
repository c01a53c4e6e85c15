/**
 * How `delay()` connects the app on first use: the broker is what a publish needs.
 */
import { describe, expect, it } from "vitest";
import { settlesWithin } from "../../src/core/sleep.js";
import { BackendConnectionError, BrokerConnectionError } from "../../src/errors.js";
import { Chicory, MemoryBackend, MemoryBroker } from "../../src/index.js";
import { deferred } from "../helpers/deferred.js";

function appWith(broker: MemoryBroker, backend: MemoryBackend) {
  const app = new Chicory({ broker, backend, config: { env: {} } });
  const add = app.task(function add(a: number, b: number) {
    return a + b;
  });
  return { app, add };
}

/** Makes `backend`'s connect wait until the returned deferred resolves. */
function holdConnect(backend: MemoryBackend) {
  const held = deferred();
  const connectBackend = backend.connect.bind(backend);
  backend.connect = async () => {
    await held.promise;
    await connectBackend();
  };
  return held;
}

describe("delay() connecting the app", () => {
  it("publishes when the backend cannot connect, once, and get() then says why", async () => {
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    let attempts = 0;
    backend.connect = async () => {
      attempts++;
      throw new BackendConnectionError("memory backend: connect ECONNREFUSED");
    };
    const { app, add } = appWith(broker, backend);
    try {
      const first = await add.delay(1, 2);
      await add.delay(3, 4);
      expect(await broker.getQueueSize("default")).toBe(2);
      expect(attempts).toBe(1); // the second delay() did not wait for the backend again
      await expect(first.get({ timeout: 1 })).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      await app.disconnect();
    }
  });

  it("publishes without waiting for a backend that is slow to connect; get() waits for that connect", async () => {
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    const held = holdConnect(backend); // a database that takes its time (or a schema lock held elsewhere)
    const { app, add } = appWith(broker, backend);
    try {
      // before, the first delay() waited for the backend's connect (its timeout, when silent)
      const sending = add.delay(1, 2);
      expect(await settlesWithin(sending, 2_000)).toBe(true);
      const result = await sending;
      expect(await broker.getQueueSize("default")).toBe(1);
      expect(backend.isOpen).toBe(false);
      const waiting = result.get({ timeout: 5 });
      held.resolve();
      await backend.storeResult({
        taskId: result.taskId,
        state: "SUCCESS",
        result: 3,
        updatedAt: new Date().toISOString(),
      });
      expect(await waiting).toBe(3);
    } finally {
      held.resolve();
      await app.disconnect();
    }
  });

  it("a caller-chosen id's first delay() still replaces its finished record while the backend connects", async () => {
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    await backend.connect();
    await backend.storeResult({ taskId: "job-1", state: "SUCCESS", result: 1, updatedAt: new Date().toISOString() });
    await backend.disconnect();
    const held = holdConnect(backend);
    const getResult = backend.getResult.bind(backend);
    backend.getResult = async (taskId) => {
      // as the Redis and SQL backends: nothing to read before connect()
      if (!backend.isOpen) throw new BackendConnectionError("memory backend is not connected");
      return getResult(taskId);
    };
    const { app, add } = appWith(broker, backend);
    try {
      const sending = add.applyAsync([1, 2], { taskId: "job-1" });
      // past the 250 ms a delay() waits for the backend: the record read connects it itself
      setTimeout(() => held.resolve(), 400);
      const result = await sending;
      expect(await broker.getQueueSize("default")).toBe(1);
      expect(await result.state()).toBe("PENDING"); // not the old run's SUCCESS
    } finally {
      held.resolve();
      await app.disconnect();
    }
  });

  it("a delay() racing disconnect() leaves the broker and the backend closed", async () => {
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    const connectBroker = broker.connect.bind(broker);
    let letConnect: () => void = () => undefined;
    const connectHeld = new Promise<void>((resolve) => {
      letConnect = resolve;
    });
    broker.connect = async () => {
      await connectHeld; // a broker that takes its time to connect
      await connectBroker();
    };
    const { app, add } = appWith(broker, backend);
    const sent = add.delay(1, 2);
    const closing = app.disconnect();
    letConnect();
    await closing;
    await expect(sent).rejects.toThrow(/^app\.disconnect\(\) was called while the app connected for this publish/);
    // named as a publish's failure is: the caller finds its un-awaited delay() by it
    await expect(sent).rejects.toMatchObject({
      taskId: expect.any(String),
      message: expect.stringMatching(/\(task add, id [\w-]+\)$/),
    });
    // before, the delay() connected both again after the disconnect had resolved
    expect((await broker.healthcheck()).connected).toBe(false);
    expect((await backend.healthcheck()).connected).toBe(false);
  });

  it("an app.connect() that an app.disconnect() overtakes rejects, whichever part it was connecting; the next connects", async () => {
    for (const part of ["broker", "backend"] as const) {
      const broker = new MemoryBroker();
      const backend = new MemoryBackend();
      const held = deferred();
      const entered = deferred();
      const target = part === "broker" ? broker : backend;
      const connectTarget = target.connect.bind(target);
      target.connect = async () => {
        entered.resolve();
        await held.promise; // takes its time to connect
        await connectTarget();
      };
      const { app } = appWith(broker, backend);
      const connecting = app.connect().catch((e: unknown) => e);
      await entered.promise;
      const closing = app.disconnect();
      held.resolve();
      await closing;
      const failure = await connecting;
      // before, it resolved with nothing connected
      expect(failure).toBeInstanceOf(part === "broker" ? BrokerConnectionError : BackendConnectionError);
      expect(String((failure as Error).message)).toBe(
        `connect: app.disconnect() was called while the app connected its ${part}; nothing is left connected (connect() again to use it)`,
      );
      expect((await broker.healthcheck()).connected).toBe(false);
      expect((await backend.healthcheck()).connected).toBe(false);
      await app.connect();
      expect((await broker.healthcheck()).connected).toBe(true);
      expect((await backend.healthcheck()).connected).toBe(true);
      await app.disconnect();
    }
  });

  it("fails when the broker cannot connect, and connects both on the next call", async () => {
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    const connectBroker = broker.connect.bind(broker);
    broker.connect = async () => {
      throw new BrokerConnectionError("memory broker: connect ECONNREFUSED");
    };
    const { app, add } = appWith(broker, backend);
    try {
      await expect(add.delay(1, 2)).rejects.toThrow(/ECONNREFUSED/);
      broker.connect = connectBroker;
      const result = await add.delay(1, 2);
      expect(await broker.getQueueSize("default")).toBe(1);
      expect(await result.state()).toBe("PENDING");
      expect((await backend.healthcheck()).connected).toBe(true);
    } finally {
      await app.disconnect();
    }
  });

  it("a connect() after two overlapping disconnect()s waits for both: the slower, earlier one does not close what it opens", async () => {
    const broker = new MemoryBroker();
    const backend = new MemoryBackend();
    const { app } = appWith(broker, backend);
    await app.connect();
    const disconnectBroker = broker.disconnect.bind(broker);
    const held = deferred();
    const firstEntered = deferred();
    let calls = 0;
    broker.disconnect = async () => {
      if (calls++ === 0) {
        firstEntered.resolve();
        await held.promise; // the first disconnect takes its time (a flush of publishes)
      }
      await disconnectBroker();
    };
    const first = app.disconnect();
    await firstEntered.promise;
    await app.disconnect(); // ends at once: nothing left for it to close
    const connecting = app.connect();
    held.resolve();
    await first;
    await connecting;
    // before, the first disconnect closed the broker and the backend this connect had opened
    expect((await broker.healthcheck()).connected).toBe(true);
    expect((await backend.healthcheck()).connected).toBe(true);
    await app.disconnect();
  });
});
