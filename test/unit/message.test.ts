import { describe, expect, it } from "vitest";
import type { JsonValue } from "../../src/core/json.js";
import { MessageCodec, peekHead, type TaskMessage } from "../../src/core/message.js";
import { MessageTooLargeError, ValidationError } from "../../src/errors.js";

const message = (over: Partial<TaskMessage> = {}): TaskMessage => ({
  v: 1,
  id: "id-1",
  name: "send_email",
  args: ["a@b.c", { n: 1 }],
  retries: 0,
  eta: null,
  priority: null,
  firstFailureAt: null,
  lastError: null,
  ...over,
});

describe("MessageCodec", () => {
  it("round-trips a message as versioned JSON", () => {
    const codec = new MessageCodec();
    const body = codec.encode(message());
    expect(JSON.parse(body).v).toBe(1);
    expect(codec.decode(body)).toEqual({ ok: true, message: message() });
  });

  it("rejects oversized messages at encode and at decode, before parsing", () => {
    const codec = new MessageCodec({ maxMessageBytes: 1024 });
    expect(() => codec.encode(message({ args: ["x".repeat(2000)] }))).toThrow(MessageTooLargeError);
    const result = codec.decode(`{"v":1,"junk":"${"x".repeat(2000)}"`);
    expect(result).toMatchObject({ ok: false, reason: "too_large" });
  });

  it("rejects non-JSON args naming the argument", () => {
    expect(() => new MessageCodec().encode(message({ args: [1, 2n as never] }))).toThrow(/args\[1\].*BigInt/);
  });

  it("reports undecodable and badly shaped input without throwing", () => {
    const codec = new MessageCodec();
    expect(codec.decode("\x80\x04cos\nsystem")).toMatchObject({ ok: false, reason: "decode_error" });
    expect(codec.decode("[1,2]")).toMatchObject({ ok: false, reason: "schema_error" });
    expect(codec.decode("")).toMatchObject({
      ok: false,
      reason: "decode_error",
      error: expect.stringMatching(/^empty message/),
    });
    for (const bad of [
      { retries: -1 },
      { retries: "x" },
      { eta: "+275760-09-13" },
      { eta: "NaN" },
      { priority: 1e9 },
      { name: "../../etc/passwd" },
      { name: "a b" },
      { name: "" },
      { v: 2 },
      { args: "x" },
    ]) {
      const body = JSON.stringify({ ...message(), ...bad });
      expect(codec.decode(body), JSON.stringify(bad)).toMatchObject({ ok: false, reason: "schema_error" });
    }
    // the errors say what to send instead
    const error = (bad: Record<string, unknown>) => {
      const decoded = codec.decode(JSON.stringify({ ...message(), ...bad }));
      return decoded.ok ? "" : decoded.error;
    };
    expect(error({ eta: "2026-12-04T10:00:00" })).toBe(
      'eta must be an ISO 8601 date-time with its offset (Z or +hh:mm) or null: "2026-12-04T10:00:00" has no offset (a local time, read differently on each machine)',
    );
    expect(error({ eta: "tomorrow" })).toBe("eta must be an ISO 8601 date-time with its offset (Z or +hh:mm) or null");
    expect(error({ v: undefined })).toBe('no message version ("v": 1 expected): not a Chicory task message?');
    expect(error({ eta: "2026-12-04T10:00:00+01:00" })).toBe("");
  });

  it("rejects nesting deeper than 64 before building objects", () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const body = `{"v":1,"id":"x","name":"t","args":${deep},"retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null}`;
    expect(new MessageCodec({ maxMessageBytes: 10_000_000 }).decode(body)).toMatchObject({
      ok: false,
      reason: "decode_error",
    });
  });

  it("an argument nested as deep as delay() takes (64 levels) decodes: the message's own object and args array do not count", () => {
    const codec = new MessageCodec();
    const nest = (n: number): JsonValue => {
      let v: JsonValue = 0;
      for (let i = 0; i < n; i++) v = [v];
      return v;
    };
    const body = codec.encode({ ...message(), args: [nest(64)] });
    const decoded = codec.decode(body); // before: "not JSON: JSON nested deeper than 64 levels"
    expect(decoded.ok).toBe(true);
    expect(() => codec.encode({ ...message(), args: [nest(65)] })).toThrow(/nested deeper than 64 levels/);
  });

  it("refuses a number too large for a double (it would be Infinity, which no retry could encode)", () => {
    const codec = new MessageCodec();
    const body = (args: string) =>
      `{"v":1,"id":"x","name":"t","args":${args},"retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null}`;
    const long = [`${"2".repeat(300)}e9`, `${"2".repeat(308)}e1`, `${"9".repeat(308)}.9e1`, `${"9".repeat(210)}e99`];
    for (const literal of ["1e400", "-2E+309", `${"9".repeat(309)}`, ...long]) {
      expect(Number(literal), literal).toBe(literal.startsWith("-") ? -Infinity : Infinity);
      expect(codec.decode(body(`[1,{"n":[${literal}]}]`))).toEqual({
        ok: false,
        reason: "schema_error",
        error: expect.stringMatching(/^args\[1\]\.n\[0\]: -?Infinity is not a finite number$/),
      });
    }
    // in an object kept as inert data (a "__proto__" key) too
    expect(codec.decode(body(`[{"__proto__":{"n":1e400}}]`))).toMatchObject({ ok: false, reason: "schema_error" });
    // large but finite numbers, an underflow to 0, and such text inside strings are arguments as any
    for (const args of [
      `[1e308,1e-400,${"9".repeat(308)}]`,
      `["1e400","x${"7".repeat(400)}"]`,
      `[12e123]`,
      `[${"9".repeat(209)}e99]`,
    ]) {
      expect(codec.decode(body(args)).ok, args).toBe(true);
    }
  });

  it("keeps __proto__ and constructor keys as inert data", () => {
    const codec = new MessageCodec();
    const body = `{"v":1,"id":"x","name":"t","args":[{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}],"retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null}`;
    const result = codec.decode(body);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const arg = result.message.args[0] as Record<string, unknown>;
    expect(Object.keys(arg)).toEqual(["__proto__", "constructor"]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((arg as { polluted?: unknown }).polluted).toBeUndefined();
  });

  describe("signing", () => {
    const signer = new MessageCodec({ signingKey: "k1" });

    it("signs and verifies", () => {
      const body = signer.encode(message());
      expect(JSON.parse(body).sig).toEqual(expect.any(String));
      expect(signer.decode(body)).toEqual({ ok: true, message: message() });
    });

    it("verifies a message signed elsewhere as docs/reliability/security.md describes (the Python snippet's output)", () => {
      const signed =
        '{"v":1,"id":"py-1","name":"add","args":[1,2],"retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null,"sig":"GkQF3FIm24JXo8w9NllNAkGUYXq5W4Erubs467K1Gl4"}';
      expect(new MessageCodec({ signingKey: "s3cret" }).decode(signed)).toMatchObject({
        ok: true,
        message: { id: "py-1", name: "add", args: [1, 2] },
      });
      const spaced = signed.replace(',"sig":', ', "sig": ');
      expect(new MessageCodec({ signingKey: "s3cret" }).decode(spaced)).toMatchObject({ reason: "bad_signature" });
    });

    it("rejects unsigned, forged and tampered messages", () => {
      expect(signer.decode(new MessageCodec().encode(message()))).toMatchObject({ ok: false, reason: "unsigned" });
      expect(signer.decode(new MessageCodec({ signingKey: "other" }).encode(message()))).toMatchObject({
        ok: false,
        reason: "bad_signature",
      });
      const body = signer.encode(message());
      const tampered = body.replace('"retries":0', '"retries":9');
      expect(signer.decode(tampered)).toMatchObject({ ok: false, reason: "bad_signature" });
      const moved = body.replace(/,"sig":"([^"]+)"}$/, "}").replace('{"v":1', '{"sig":"x","v":1');
      expect(signer.decode(moved).ok).toBe(false);
    });

    it("a worker without the key still reads signed messages", () => {
      expect(new MessageCodec().decode(signer.encode(message())).ok).toBe(true);
    });
  });

  it("encode validates the shape", () => {
    expect(() => new MessageCodec().encode(message({ priority: 300 }))).toThrow(ValidationError);
  });
});

describe("safe parsing of escaped keys", () => {
  it("neutralizes a __proto__ key written with \\u escapes", () => {
    const body = `{"v":1,"id":"x","name":"t","args":[{"\\u005f_proto__":{"polluted":true}}],"retries":0,"eta":null,"priority":null,"firstFailureAt":null,"lastError":null}`;
    const result = new MessageCodec().decode(body);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const arg = result.message.args[0] as Record<string, unknown>;
    expect(Object.getPrototypeOf(arg)).toBeNull();
    Object.assign({}, arg);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe("peekHead (the id of a task message a worker cannot decode)", () => {
  it("reads the id and name from the first bytes of a message Chicory encoded, escapes included", () => {
    const codec = new MessageCodec({ maxMessageBytes: 10 * 1024 * 1024 });
    const id = 'a "quoted" id \\ é 😀';
    const body = codec.encode(message({ id, name: "big.task", args: ["x".repeat(5 * 1024 * 1024)] }));
    expect(peekHead(body)).toEqual({ id, name: "big.task" });
  });

  it("falls back to parsing a body in another member order; null without a well-formed id or name", () => {
    expect(peekHead(JSON.stringify({ name: "t", args: [], id: "late-id", v: 1 }))).toEqual({
      id: "late-id",
      name: "t",
    });
    expect(peekHead(JSON.stringify({ v: 1, id: "", name: "t" }))).toBeNull();
    expect(peekHead(JSON.stringify({ v: 1, id: "x".repeat(256), name: "t" }))).toBeNull();
    expect(peekHead(`{"v":1,"id":"ok","name":"bad name!",`)).toBeNull();
    expect(peekHead("not json")).toBeNull();
  });

  it("reads a task message of another version; not another producer's JSON object with an id", () => {
    expect(peekHead(JSON.stringify({ v: 2, id: "p4", name: "echo", args: {} }))).toEqual({ id: "p4", name: "echo" });
    expect(peekHead(JSON.stringify({ id: "order-9", event: "shipped" }))).toBeNull();
    expect(peekHead(JSON.stringify({ id: "order-9", name: "shipped", event: "x" }))).toBeNull(); // no version
    expect(peekHead(JSON.stringify({ v: "1", id: "order-9", name: "t" }))).toBeNull();
  });
});
