import { describe, expect, it, vi } from "vitest";
import type { TaskRecord } from "../../src/backends/backend.js";
import { rewriteForReplay, toDlqMessage } from "../../src/brokers/dlq.js";
import { MessageCodec, type TaskMessage } from "../../src/core/message.js";
import { BackendConnectionError, ReplayRecordKeptError, ValidationError } from "../../src/errors.js";
import { Chicory, MemoryBackend, MemoryBroker } from "../../src/index.js";

function message(overrides: Partial<TaskMessage> = {}): TaskMessage {
  return {
    v: 1,
    id: "task-1",
    name: "app.add",
    args: [1, 2],
    retries: 3,
    eta: "2030-01-01T00:00:00.000Z",
    priority: 5,
    firstFailureAt: "2024-01-01T00:00:00.000Z",
    lastError: "boom",
    ...overrides,
  };
}

describe("toDlqMessage", () => {
  it("parses the original message and takes retryCount from it", () => {
    const body = new MessageCodec().encode(message());
    const failedAt = new Date("2024-05-01T12:00:00.000Z");
    const dlq = toDlqMessage("m1", { body, error: "poison", failedAt });
    expect(dlq).toEqual({
      messageId: "m1",
      originalMessage: JSON.parse(body),
      body,
      failedAt,
      error: "poison",
      retryCount: 3,
    });
    expect(dlq.failedAt).not.toBe(failedAt);
  });

  it("prefers the stored retryCount", () => {
    const body = new MessageCodec().encode(message());
    expect(toDlqMessage("m", { body, error: "e", failedAt: 0, retryCount: 7 }).retryCount).toBe(7);
    // a foreign entry's unreadable time shows as the epoch: a listing never throws on it
    const odd = toDlqMessage("m", { body, error: "e", failedAt: "yesterday-ish" });
    expect(odd.failedAt.toISOString()).toBe("1970-01-01T00:00:00.000Z");
  });

  it("accepts ISO strings, epoch numbers and numeric strings for failedAt", () => {
    const iso = "2024-05-01T12:00:00.000Z";
    const ms = Date.parse(iso);
    for (const failedAt of [iso, ms, String(ms)]) {
      expect(toDlqMessage("m", { body: "x", error: "e", failedAt }).failedAt.getTime()).toBe(ms);
    }
  });

  it("keeps a non-message body raw with originalMessage null and retryCount 0", () => {
    const dlq = toDlqMessage("m", { body: "not json \u0000", error: "decode_error", failedAt: 1 });
    expect(dlq.originalMessage).toBeNull();
    expect(dlq.body).toBe("not json \u0000");
    expect(dlq.retryCount).toBe(0);
  });

  it("ignores a non-numeric retries field", () => {
    expect(toDlqMessage("m", { body: '{"retries":"x"}', error: "e", failedAt: 1 }).retryCount).toBe(0);
  });
});

describe("rewriteForReplay", () => {
  it("resets retries, eta, firstFailureAt and lastError", () => {
    const codec = new MessageCodec();
    const out = rewriteForReplay(codec, codec.encode(message()), true);
    const decoded = codec.decode(out);
    expect(decoded.ok && decoded.message).toEqual(
      message({ retries: 0, eta: null, firstFailureAt: null, lastError: null }),
    );
  });

  it("returns the body unchanged without resetRetries", () => {
    const codec = new MessageCodec();
    const body = codec.encode(message());
    expect(rewriteForReplay(codec, body, false)).toBe(body);
  });

  it("re-signs when the codec signs", () => {
    const codec = new MessageCodec({ signingKey: "k" });
    const out = rewriteForReplay(codec, codec.encode(message()), true);
    expect(out).toContain('"sig"');
    const decoded = codec.decode(out);
    expect(decoded.ok).toBe(true);
    expect(decoded.ok && decoded.message.retries).toBe(0);
  });

  it("refuses to reset a signed message's retries without the key (it would go out unsigned); as is, it replays", () => {
    const signed = new MessageCodec({ signingKey: "k" }).encode(message({ retries: 2 }));
    const keyless = new MessageCodec();
    expect(() => rewriteForReplay(keyless, signed, true)).toThrow(ValidationError);
    expect(() => rewriteForReplay(keyless, signed, true)).toThrow(/no signing key .*`--no-reset-retries`/);
    expect(rewriteForReplay(keyless, signed, false)).toBe(signed);
  });

  it("a process without the key refuses an entry the workers rejected for its signature (it would only be rejected again, its id kept reserved)", () => {
    const keyless = new MessageCodec();
    const unsigned = keyless.encode(message());
    for (const error of [
      "MessageRejected: unsigned: message is not signed",
      "MessageRejected: bad_signature: message signature does not match",
    ]) {
      for (const reset of [true, false]) {
        expect(() => rewriteForReplay(keyless, unsigned, reset, error)).toThrow(/rejected it for its signature/);
      }
    }
    // any other failure replays as before
    expect(rewriteForReplay(keyless, unsigned, false, "Error: boom")).toBe(unsigned);
  });

  it("throws a ValidationError for a body that does not decode", () => {
    const codec = new MessageCodec();
    expect(() => rewriteForReplay(codec, "garbage", true)).toThrow(ValidationError);
    expect(() => rewriteForReplay(codec, "garbage", false)).toThrow(/stays in the DLQ/);
    const unsigned = codec.encode(message());
    expect(() => rewriteForReplay(new MessageCodec({ signingKey: "k" }), unsigned, true)).toThrow(/unsigned/);
  });
});

describe("replayFromDlq through an app: the task's stored failure", () => {
  async function setup(backend: MemoryBackend, record: TaskRecord | null, connectApp = true) {
    const app = new Chicory({ broker: new MemoryBroker(), backend });
    if (connectApp) await app.connect();
    else await app.broker.connect();
    if (record) await backend.storeResult(record);
    await app.broker.writeDeadLetter("default", app.codec.encode(message()), "poison");
    const [entry] = await app.broker.getDlqMessages("default");
    return { app, entryId: entry?.messageId ?? "" };
  }
  const failed: TaskRecord = {
    taskId: "task-1",
    state: "DEAD_LETTERED",
    error: { type: "Error", message: "boom" },
    updatedAt: new Date().toISOString(),
  };

  it("is deleted once the entry is back in its queue", async () => {
    const { app, entryId } = await setup(new MemoryBackend(), failed);
    expect(await app.broker.replayFromDlq(entryId, "default")).toBe(true);
    expect(await app.backend?.getResult("task-1")).toBeNull();
    expect(await app.broker.getQueueSize("default")).toBe(1);
    await app.disconnect();
  });

  it("a SUCCESS record is kept", async () => {
    const { app, entryId } = await setup(new MemoryBackend(), { ...failed, state: "SUCCESS", error: undefined });
    expect(await app.broker.replayFromDlq(entryId, "default")).toBe(true);
    expect((await app.backend?.getResult("task-1"))?.state).toBe("SUCCESS");
    await app.disconnect();
  });

  it("a backend that cannot be read stops the replay: the entry stays in the DLQ", async () => {
    class Unreachable extends MemoryBackend {
      override async getResult(): Promise<TaskRecord | null> {
        throw new BackendConnectionError("connection refused");
      }
    }
    const { app, entryId } = await setup(new Unreachable(), null);
    const error = await app.broker.replayFromDlq(entryId, "default").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackendConnectionError);
    expect(String(error)).toMatch(/task task-1: nothing was replayed.*connection refused/);
    expect(await app.broker.getDlqCount("default")).toBe(1);
    expect(await app.broker.getQueueSize("default")).toBe(0);
    await app.disconnect();
  });

  it("a backend that does not answer stops the replay after 10 s: nothing is replayed", async () => {
    class Silent extends MemoryBackend {
      override getResult(): Promise<TaskRecord | null> {
        return new Promise(() => undefined);
      }
    }
    const { app, entryId } = await setup(new Silent(), failed);
    vi.useFakeTimers();
    let error: unknown;
    try {
      const replay = app.broker.replayFromDlq(entryId, "default").catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(10_001);
      error = await replay;
    } finally {
      vi.useRealTimers();
    }
    expect(error).toBeInstanceOf(BackendConnectionError);
    expect(String(error)).toMatch(/nothing was replayed.*no answer within 10 s/);
    expect(await app.broker.getDlqCount("default")).toBe(1);
    await app.disconnect();
  });

  it("a delete that fails after the move says the entry was replayed", async () => {
    class NoDelete extends MemoryBackend {
      override async deleteResultIf(): Promise<boolean> {
        throw new BackendConnectionError("connection reset");
      }
    }
    const { app, entryId } = await setup(new NoDelete(), failed);
    const error = await app.broker.replayFromDlq(entryId, "default").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReplayRecordKeptError);
    expect((error as ReplayRecordKeptError).code).toBe("REPLAY_RECORD_KEPT");
    expect(String(error)).toMatch(/the task was replayed, but its stored DEAD_LETTERED result could not be deleted/);
    expect(await app.broker.getDlqCount("default")).toBe(0);
    expect(await app.broker.getQueueSize("default")).toBe(1);
    await app.disconnect();
  });

  it("a backend the app has not connected is disconnected again after the replay", async () => {
    const calls: string[] = [];
    class Watched extends MemoryBackend {
      override async connect(): Promise<void> {
        calls.push("connect");
        await super.connect();
      }
      override async disconnect(): Promise<void> {
        calls.push("disconnect");
        await super.disconnect();
      }
    }
    const backend = new Watched();
    const { app, entryId } = await setup(backend, null, false);
    await backend.storeResult(failed);
    expect(await app.broker.replayFromDlq(entryId, "default")).toBe(true);
    expect(calls).toEqual(["connect", "disconnect"]);
    expect(await backend.getResult("task-1")).toBeNull();
    // Two at once: the backend stays open until the last one ends.
    calls.length = 0;
    for (const id of ["task-2", "task-3"]) {
      await app.broker.writeDeadLetter("default", app.codec.encode(message({ id })), "poison");
    }
    const entries = await app.broker.getDlqMessages("default");
    const replayed = await Promise.all(entries.map((e) => app.broker.replayFromDlq(e.messageId, "default")));
    expect(replayed).toEqual([true, true]);
    expect(calls).toEqual(["connect", "connect", "disconnect"]);
    await app.disconnect();
  });

  it("a record the backend cannot delete while it still reads it is reported", async () => {
    class NoMatch extends MemoryBackend {
      override async deleteResultIf(): Promise<boolean> {
        return false;
      }
    }
    const { app, entryId } = await setup(new NoMatch(), failed);
    const error = await app.broker.replayFromDlq(entryId, "default").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReplayRecordKeptError);
    expect(String(error)).toMatch(/the task was replayed, but .* could not be deleted.*did not match/);
    expect(await app.broker.getQueueSize("default")).toBe(1);
    await app.disconnect();
  });
});
