/**
 * A task's `result` schema types its value: the handler's return (awaited) must be assignable to
 * the schema's input, and `get()` resolves to the schema's output when the handler's return is one
 * of its values (an enum's full type), else to the handler's return type (a transform or coercion
 * changes the value only under validation mode `outputs`/`strict`; by default the return is stored).
 */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { describe, expectTypeOf, it } from "vitest";
import { z } from "zod";
import {
  type AsyncResult,
  Chicory,
  MemoryBackend,
  MemoryBroker,
  type TaskContext,
  type TaskOptions,
} from "../../src/index.js";

const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend() });

declare const defaults: Partial<TaskOptions>;
declare const options: TaskOptions;
declare const anySchema: StandardSchemaV1;
declare const maybeSchema: StandardSchemaV1 | undefined;

describe("a handler whose return type is not the result schema's input", () => {
  it("is an error, async or sync, with or without a context or an argument schema", () => {
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ name: "async_mismatch", result: z.number() }, async () => "1");
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ name: "sync_mismatch", result: z.number() }, (n: number) => String(n));
    // @ts-expect-error returns nothing, the schema takes a number
    app.task({ name: "void_mismatch", result: z.number() }, async () => {});
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ name: "ctx_mismatch", context: true, result: z.number() }, async (ctx: TaskContext) => ctx.taskId);
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ name: "args_mismatch", args: z.tuple([z.string()]), result: z.number() }, async (s) => s);
    app.task(
      { name: "args_ctx_mismatch", args: z.tuple([z.string()]), context: true, result: z.number() },
      // @ts-expect-error returns a string, the schema takes a number
      (_ctx, s) => s,
    );
    // @ts-expect-error a property of the wrong type
    app.task({ name: "object_mismatch", result: z.object({ ok: z.boolean() }) }, async () => ({ ok: 1 }));
    // @ts-expect-error not one of the schema's values
    app.task({ name: "enum_mismatch", result: z.enum(["sent", "failed"]) }, async () => "queued");
    // @ts-expect-error the worker validates the return value even when it is not stored
    app.task({ name: "ignored_mismatch", ignoreResult: true, result: z.number() }, async () => "1");
  });

  it("is an error under the general overload as well", () => {
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ ...defaults, result: z.number() }, async (s: string) => s);
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ ...defaults, context: true, result: z.number() }, async (ctx) => ctx.taskId);
    // @ts-expect-error returns a string, the schema takes a number
    app.task({ ...defaults, args: z.tuple([z.string()]), result: z.number() }, (s: string) => s);
    // @ts-expect-error not the schema's literal
    app.task({ ...defaults, result: z.literal(true) }, async (n: number) => n > 0);
  });
});

describe("a handler that returns the result schema's input", () => {
  it("types get() as the handler's return when the schema changes the value (stored as returned by default)", () => {
    const length = app.task({ name: "length", result: z.string().transform((s) => s.length) }, async () => "abc");
    expectTypeOf(length.delay()).resolves.toEqualTypeOf<AsyncResult<string>>();
    const ctx = app.task(
      { name: "ctx_length", context: true, result: z.string().transform((s) => s.length) },
      (c, prefix: string) => `${prefix}${c.taskId}`,
    );
    expectTypeOf(ctx.delay).parameters.toEqualTypeOf<[prefix: string]>();
    expectTypeOf(ctx.delay("x")).resolves.toEqualTypeOf<AsyncResult<string>>();
    const general = app.task({ ...defaults, result: z.string().transform((s) => s.length) }, async () => "abc");
    expectTypeOf(general.delay()).resolves.toEqualTypeOf<AsyncResult<string>>();
  });

  it("keeps the literals it returns for a literal or enum schema (async ones too)", () => {
    const status = app.task({ name: "status", result: z.enum(["sent", "failed"]) }, async () => "sent");
    expectTypeOf(status.delay()).resolves.toEqualTypeOf<AsyncResult<"sent" | "failed">>();
    const sync = app.task({ name: "status_sync", result: z.enum(["sent", "failed"]) }, () => "failed");
    expectTypeOf(sync.delay()).resolves.toEqualTypeOf<AsyncResult<"sent" | "failed">>();
    const flag = app.task({ name: "flag", result: z.literal(true) }, async () => true);
    expectTypeOf(flag.delay()).resolves.toEqualTypeOf<AsyncResult<true>>();
    const nested = app.task({ name: "nested", result: z.object({ status: z.enum(["sent", "failed"]) }) }, async () => ({
      status: "sent",
    }));
    expectTypeOf(nested.delay()).resolves.toEqualTypeOf<AsyncResult<{ status: "sent" | "failed" }>>();
    const general = app.task({ ...defaults, result: z.literal(1) }, async (a) => {
      expectTypeOf(a).toEqualTypeOf<unknown>();
      return 1;
    });
    expectTypeOf(general.delay()).resolves.toEqualTypeOf<AsyncResult<1>>();
  });

  it("may return anything for a schema whose input is unknown", () => {
    const coerced = app.task({ name: "coerced", result: z.coerce.number() }, async (s: string) => s);
    expectTypeOf(coerced.delay("1")).resolves.toEqualTypeOf<AsyncResult<string>>();
  });

  it("z.void() takes a handler that returns nothing", () => {
    const quiet = app.task({ name: "quiet", result: z.void() }, async () => {});
    expectTypeOf(quiet.delay()).resolves.toEqualTypeOf<AsyncResult<void>>();
  });

  it("ignoreResult: true still types the value as undefined", () => {
    const ignored = app.task({ name: "ignored", ignoreResult: true, result: z.number() }, async () => 1);
    expectTypeOf(ignored.delay()).resolves.toEqualTypeOf<AsyncResult<undefined>>();
  });
});

describe("result schemas whose types are open keep the handler's return type", () => {
  it("a schema typed StandardSchemaV1, or one that may be undefined", () => {
    const any = app.task({ name: "any_result", result: anySchema }, async () => ({ a: 1 }));
    expectTypeOf(any.delay()).resolves.toEqualTypeOf<AsyncResult<{ a: number }>>();
    const maybe = app.task({ name: "maybe_result", result: maybeSchema }, (n: number) => n);
    expectTypeOf(maybe.delay(1)).resolves.toEqualTypeOf<AsyncResult<number>>();
  });

  it("options typed TaskOptions", () => {
    const t = app.task(options, async (a: number) => `${a}`);
    expectTypeOf(t.delay(1)).resolves.toEqualTypeOf<AsyncResult<string>>();
  });

  it("a schema whose output is unknown", () => {
    const t = app.task({ name: "unknown_result", result: z.unknown() }, async () => ({ a: 1 }));
    expectTypeOf(t.delay()).resolves.toEqualTypeOf<AsyncResult<{ a: number }>>();
  });
});
