/**
 * Seeded, bounded fuzzing (RELIABILITY §3.5 P2) of the message decoder, the encoder round
 * trip (with and without signing), the configuration parser and durations.
 * Replay a failure with its printed seed: `FC_SEED=<seed> npx vitest run test/security/codec-fuzz.test.ts`.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config.js";
import { toMs } from "../../src/core/duration.js";
import type { JsonValue } from "../../src/core/json.js";
import { MESSAGE_VERSION, MessageCodec, peekMessage, type TaskMessage } from "../../src/core/message.js";
import { MAX_TIMER_MS, timerDelay } from "../../src/core/sleep.js";
import { maskUrlsIn } from "../../src/core/url.js";
import { ConfigurationError, MessageTooLargeError, ValidationError } from "../../src/errors.js";
import { startLoop } from "../../src/worker/loops.js";

const SEED = Number(process.env.FC_SEED ?? 20_240_607);
const RUNS = Number(process.env.FC_RUNS ?? 2000);
const opts = { seed: SEED, numRuns: RUNS };
const REASONS = new Set(["too_large", "decode_error", "schema_error", "unsigned", "bad_signature"]);
const KEY = "fuzz-signing-key";

const plain = new MessageCodec({ maxMessageBytes: 64 * 1024 });
const signed = new MessageCodec({ maxMessageBytes: 64 * 1024, signingKey: KEY });

/** decode() never throws and always answers ok with a message, or a known reason. */
function checkDecode(codec: MessageCodec, raw: string | Buffer): ReturnType<MessageCodec["decode"]> {
  const result = codec.decode(raw);
  if (result.ok) {
    expect(result.message.v).toBe(MESSAGE_VERSION);
    // anything accepted must be a well-formed message: it encodes again without error
    expect(() => plain.encode(result.message)).not.toThrow();
  } else {
    expect(REASONS.has(result.reason)).toBe(true);
    expect(typeof result.error).toBe("string");
  }
  return result;
}

const iso = fc
  .date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("9999-12-31T23:59:59Z"), noInvalidDate: true })
  .map((d) => d.toISOString());
const validName = fc.stringMatching(/^[A-Za-z0-9._:-]{1,128}$/);
const jsonArgs = fc.array(fc.jsonValue({ maxDepth: 4 }), { maxLength: 5 }) as fc.Arbitrary<JsonValue[]>;

const validMessage: fc.Arbitrary<TaskMessage> = fc.record({
  v: fc.constant(1 as const),
  id: fc.string({ minLength: 1, maxLength: 255, unit: "grapheme" }).filter((s) => s.length >= 1 && s.length <= 255),
  name: validName,
  args: jsonArgs,
  retries: fc.integer({ min: 0, max: 1_000_000 }),
  eta: fc.option(iso, { nil: null }),
  priority: fc.option(fc.integer({ min: 0, max: 255 }), { nil: null }),
  firstFailureAt: fc.option(iso, { nil: null }),
  lastError: fc.option(fc.string({ maxLength: 200, unit: "binary" }), { nil: null }),
});

/** What decoding is expected to return for `m`: its JSON normal form (e.g. -0 becomes 0). */
const normal = (m: TaskMessage): TaskMessage => JSON.parse(JSON.stringify(m)) as TaskMessage;

describe("MessageCodec.decode fuzz", () => {
  it(`never throws on arbitrary strings (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300, unit: "binary" }), (s) => {
        checkDecode(plain, s);
        checkDecode(signed, s);
      }),
      opts,
    );
  });

  it("never throws on arbitrary bytes (invalid UTF-8 included)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        checkDecode(plain, Buffer.from(bytes));
      }),
      opts,
    );
  });

  it("never throws on arbitrary JSON values, and accepts only well-formed messages", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const result = checkDecode(plain, JSON.stringify(value) ?? "null");
        if (result.ok) expect(typeof result.message.id).toBe("string");
      }),
      opts,
    );
  });

  it("never throws on objects shaped like messages with arbitrary field values", () => {
    const field = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.constantFrom(-1e9, 1e9, -0, 1.5, 2 ** 53, "x", "NaN", "+275760-09-13T00:00:00.000Z", "__proto__", []),
    );
    const keys = ["v", "id", "name", "args", "retries", "eta", "priority", "firstFailureAt", "lastError", "sig"];
    fc.assert(
      fc.property(validMessage, fc.constantFrom(...keys), field, (m, key, value) => {
        const forged = { ...normal(m), [key]: value };
        const result = checkDecode(plain, JSON.stringify(forged));
        if (result.ok) {
          // the forged field was acceptable: it must round-trip exactly
          expect(result.message).toEqual(normal({ ...forged, sig: undefined } as unknown as TaskMessage));
        }
      }),
      opts,
    );
  });

  it("never throws on character-level mutations of valid messages", () => {
    const mutation = fc.record({
      kind: fc.constantFrom("flip", "delete", "insert", "truncate", "duplicate"),
      at: fc.nat(),
      char: fc.string({ minLength: 1, maxLength: 3, unit: "binary" }),
    });
    fc.assert(
      fc.property(validMessage, mutation, (m, mut) => {
        const body = plain.encode(m);
        const at = mut.at % (body.length + 1);
        let mutated: string;
        if (mut.kind === "flip") mutated = `${body.slice(0, at)}${mut.char}${body.slice(at + 1)}`;
        else if (mut.kind === "delete") mutated = `${body.slice(0, at)}${body.slice(at + 1)}`;
        else if (mut.kind === "insert") mutated = `${body.slice(0, at)}${mut.char}${body.slice(at)}`;
        else if (mut.kind === "truncate") mutated = body.slice(0, at);
        else mutated = `${body.slice(0, -1)},${body.slice(1)}`; // duplicate keys
        checkDecode(plain, mutated);
        checkDecode(signed, mutated);
      }),
      opts,
    );
  });

  it("rejects oversize input by byte length, deeply nested JSON before recursion", () => {
    const codec = new MessageCodec({ maxMessageBytes: 1024 });
    expect(codec.decode("x".repeat(1025))).toMatchObject({ ok: false, reason: "too_large" });
    expect(codec.decode("é".repeat(513))).toMatchObject({ ok: false, reason: "too_large" }); // 1026 bytes
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const big = new MessageCodec({ maxMessageBytes: 1024 * 1024 });
    expect(big.decode(deep)).toMatchObject({ ok: false, reason: "decode_error" });
    expect(big.decode(`{"a":${'{"a":'.repeat(99_999)}1${"}".repeat(100_000)}`)).toMatchObject({ ok: false });
  });
});

describe("MessageCodec round trip", () => {
  it("encode -> decode returns the same message (unsigned)", () => {
    fc.assert(
      fc.property(validMessage, (m) => {
        const result = plain.decode(plain.encode(m));
        expect(result).toEqual({ ok: true, message: normal(m) });
      }),
      opts,
    );
  });

  it("encode -> decode returns the same message (signed); any 1-char change is rejected", () => {
    fc.assert(
      fc.property(validMessage, fc.nat(), fc.integer({ min: 1, max: 0xffff }), (m, atRaw, delta) => {
        const body = signed.encode(m);
        expect(signed.decode(body)).toEqual({ ok: true, message: normal(m) });
        const at = atRaw % body.length;
        const code = body.charCodeAt(at);
        let replacement = (code + delta) % 0x10000;
        if (replacement === code) replacement = (code + 1) % 0x10000;
        const tampered = `${body.slice(0, at)}${String.fromCharCode(replacement)}${body.slice(at + 1)}`;
        const result = signed.decode(tampered);
        expect(result.ok).toBe(false);
        // the unsigned part decoded with the plain codec, for comparison, is irrelevant: signed never accepts it
        expect(new MessageCodec({ signingKey: "another-key" }).decode(body)).toMatchObject({
          ok: false,
          reason: "bad_signature",
        });
        expect(signed.decode(plain.encode(m))).toMatchObject({ ok: false, reason: "unsigned" });
      }),
      { ...opts, numRuns: Math.ceil(RUNS / 2) },
    );
  });

  it("encode refuses what decode would refuse (no message the worker cannot read is sent)", () => {
    fc.assert(
      fc.property(validMessage, fc.constantFrom("retries", "priority", "eta", "name"), (m, key) => {
        const bad = { retries: -1, priority: 256, eta: "soon", name: "a b" }[key];
        const forged = { ...m, [key]: bad } as TaskMessage;
        expect(() => plain.encode(forged)).toThrow(ValidationError);
      }),
      { ...opts, numRuns: 200 },
    );
    const codec = new MessageCodec({ maxMessageBytes: 1024 });
    const m: TaskMessage = {
      v: 1,
      id: "x",
      name: "n",
      args: ["y".repeat(2000)],
      retries: 0,
      eta: null,
      priority: null,
      firstFailureAt: null,
      lastError: null,
    };
    expect(() => codec.encode(m)).toThrow(MessageTooLargeError);
  });
});

const DURATION_KEYS = [
  "CHICORY_RESULT_POLL_INTERVAL",
  "CHICORY_RESULT_DEFAULT_TIMEOUT",
  "CHICORY_WORKER_HEARTBEAT_INTERVAL",
  "CHICORY_WORKER_HEARTBEAT_TTL",
  "CHICORY_WORKER_CLEANUP_INTERVAL",
  "CHICORY_WORKER_STALE_WORKERS_TIMEOUT",
  "CHICORY_WORKER_SHUTDOWN_TIMEOUT",
];
const OTHER_KEYS = [
  "CHICORY_MAX_MESSAGE_BYTES",
  "CHICORY_VALIDATION_MODE",
  "CHICORY_DELIVERY_MODE",
  "CHICORY_BROKER_URL",
  "CHICORY_BACKEND_URL",
  "CHICORY_SIGNING_KEY",
  "CHICORY_WORKER_CONCURRENCY",
  "CHICORY_WORKER_QUEUE",
  "CHICORY_WORKER_USE_DEAD_LETTER_QUEUE",
  "CHICORY_WORKER_LOG_LEVEL",
  "CHICORY_WORKER_MAX_DELIVERIES",
];

const envValue = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "0",
    "1",
    "-1",
    "1.5",
    "1e3",
    "0x10",
    "NaN",
    "Infinity",
    "9".repeat(400),
    `${"9".repeat(400)}ms`,
    "10s",
    "250ms",
    "5m",
    "1h",
    "2d",
    ".5",
    "true",
    "off",
    "yes",
    "at_most_once",
    "STRICT",
    "debug",
    "a,b",
    "a,,b",
    "{x}",
    "a\nb",
    "\u202eevil",
    "redis://u:p@h:1/0",
    "__proto__",
    "constructor",
  ),
  fc.string({ maxLength: 40, unit: "binary" }),
  fc.integer({ min: -1e6, max: 1e9 }).map(String),
  fc
    .tuple(fc.float({ noNaN: false }), fc.constantFrom("", "ms", "s", "m", "h", "d", " s", "S"))
    .map(([n, u]) => `${n}${u}`),
);

describe("configuration parser fuzz", () => {
  it("returns a valid config or throws ConfigurationError/ValidationError, never another error", () => {
    const env = fc.dictionary(fc.constantFrom(...DURATION_KEYS, ...OTHER_KEYS), envValue, { maxKeys: 8 });
    let accepted = 0;
    fc.assert(
      fc.property(env, (map) => {
        let config: ReturnType<typeof resolveConfig>;
        try {
          config = resolveConfig({ env: map });
        } catch (error) {
          if (!(error instanceof ConfigurationError || error instanceof ValidationError)) throw error;
          expect((error as Error).message.length).toBeGreaterThan(0);
          return;
        }
        accepted++;
        const w = config.worker;
        for (const seconds of [
          config.resultPollInterval,
          w.heartbeatInterval,
          w.heartbeatTtl,
          w.cleanupInterval,
          w.staleWorkersTimeout,
          w.shutdownTimeout,
        ]) {
          expect(Number.isFinite(seconds) && seconds >= 0).toBe(true);
        }
        if (config.resultDefaultTimeout !== null) expect(Number.isFinite(config.resultDefaultTimeout)).toBe(true);
        expect(w.heartbeatTtl).toBeGreaterThan(w.heartbeatInterval);
        expect(Number.isSafeInteger(w.concurrency) && w.concurrency >= 1).toBe(true);
        expect(w.queues.length).toBeGreaterThan(0);
        for (const q of w.queues) expect(q).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
        expect(Number.isSafeInteger(config.maxMessageBytes)).toBe(true);
      }),
      opts,
    );
    expect(accepted).toBeGreaterThan(0);
  });

  it("parses durations consistently: number = numeric string = seconds, units scale, result finite", () => {
    const unitMs: Record<string, number> = { "": 1000, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1e6, noNaN: true, noDefaultInfinity: true }),
        fc.constantFrom(...Object.keys(unitMs)),
        (n, unit) => {
          const text = n.toFixed(3);
          const ms = toMs(`${text}${unit}`);
          expect(ms).toBeCloseTo(Number(text) * (unitMs[unit] ?? 0), 6);
          if (unit === "") expect(toMs(Number(text))).toBe(ms);
          expect(toMs(` ${text} ${unit} `)).toBe(ms);
        },
      ),
      opts,
    );
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 30, unit: "binary" }), fc.double()), (value) => {
        let ms: number;
        try {
          ms = toMs(value);
        } catch (error) {
          expect(error).toBeInstanceOf(ConfigurationError);
          return;
        }
        expect(Number.isFinite(ms) && ms >= 0).toBe(true);
      }),
      opts,
    );
    for (const bad of ["9".repeat(400), `${"9".repeat(320)}d`, "-1", "1e3", "NaN", "Infinity", "1 2", "s"]) {
      expect(() => toMs(bad), bad.slice(0, 20)).toThrow(ConfigurationError);
    }
    expect(() => toMs(Number.POSITIVE_INFINITY)).toThrow(ConfigurationError);
  });
});

describe("regressions of defects this suite found", () => {
  it("a loop interval beyond the Node.js timer limit does not fire every millisecond", async () => {
    let runs = 0;
    const loop = startLoop(
      async () => {
        runs++;
      },
      { intervalMs: toMs("30d"), onError: () => {} },
    );
    await new Promise((r) => setTimeout(r, 100));
    await loop.stop();
    expect(runs).toBe(0);
    expect(timerDelay(1e12)).toBe(MAX_TIMER_MS);
    expect(timerDelay(Number.NaN)).toBe(MAX_TIMER_MS);
  });

  it("peekMessage (DLQ display, dead-lettering) does not parse a hostile 64 MiB body", () => {
    const huge = `{"id":"x","args":[${"[1,2,3,4],".repeat(64 * 104_857)}0]}`;
    const started = performance.now();
    expect(peekMessage(huge)).toBeNull();
    // parsing it takes seconds; looking at its head takes microseconds
    expect(performance.now() - started).toBeLessThan(500);
    expect(peekMessage('{"id":"small"}')).toEqual({ id: "small" });
  });

  it("task ids that cannot survive UTF-8 storage (lone surrogates) are schema errors", () => {
    const body = JSON.stringify({
      v: 1,
      id: "a\ud800b",
      name: "n",
      args: [],
      retries: 0,
      eta: null,
      priority: null,
      firstFailureAt: null,
      lastError: null,
    });
    expect(plain.decode(body)).toMatchObject({ ok: false, reason: "schema_error" });
  });

  it("URL passwords inside error texts are masked", () => {
    expect(maskUrlsIn("connect postgres://app:s3cret@db:5432/x and redis://:p@r:1 ?password=abc")).toBe(
      "connect postgres://app:***@db:5432/x and redis://:***@r:1 ?password=***",
    );
  });
});
