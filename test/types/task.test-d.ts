import type { StandardSchemaV1 } from "@standard-schema/spec";
import { describe, expectTypeOf, it } from "vitest";
import { z } from "zod";
import {
  type AsyncResult,
  Chicory,
  type JsonValue,
  MemoryBackend,
  MemoryBroker,
  type NotJson,
  type Task,
  type TaskContext,
  type TaskOptions,
} from "../../src/index.js";

const app = new Chicory({ broker: new MemoryBroker(), backend: new MemoryBackend() });

describe("task typing", () => {
  it("infers arguments and result from the handler", () => {
    const add = app.task(async function add(a: number, b: number) {
      return { sum: a + b };
    });
    expectTypeOf(add.delay).parameters.toEqualTypeOf<[number, number]>();
    expectTypeOf(add.delay(1, 2)).resolves.toEqualTypeOf<AsyncResult<{ sum: number }>>();
    // @ts-expect-error wrong argument type
    void add.delay("1", 2);
    // @ts-expect-error missing argument
    void add.delay(1);
  });

  it("the README's retry pattern (return ctx.retry(...)) keeps the result type whole", () => {
    const charge = app.task({ name: "chargeTyped", context: true }, async (ctx, orderId: string) => {
      try {
        return { ok: orderId.length > 0 };
      } catch (error) {
        return ctx.retry({ error, countdown: 30 });
      }
    });
    expectTypeOf(charge.delay("o1")).resolves.toEqualTypeOf<AsyncResult<{ ok: boolean }>>();
  });

  it("applyAsync takes a readonly tuple, as delay(...args) does", () => {
    const add = app.task(async function addPair(a: number, b: number) {
      return a + b;
    });
    const args = [1, 2] as const;
    expectTypeOf(add.applyAsync(args)).resolves.toEqualTypeOf<AsyncResult<number>>();
    // @ts-expect-error wrong argument type, readonly or not
    void add.applyAsync(["1", 2] as const);
  });

  it("does not take the context in delay()", () => {
    const t = app.task({ name: "with_ctx", context: true }, async (ctx: TaskContext, to: string) => {
      return `${ctx.taskId}:${to}`;
    });
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[string]>();
    expectTypeOf(t.delay("x")).resolves.toEqualTypeOf<AsyncResult<string>>();
    // @ts-expect-error the context is not an argument of delay()
    void t.delay({} as TaskContext, "x");
  });

  it("refuses a handler whose first parameter is a TaskContext without context: true, at its registration", () => {
    // before: it compiled, the first argument passed where the context was expected
    // @ts-expect-error its first parameter is a TaskContext: register it with { context: true }
    app.task(async function no_option(ctx: TaskContext, a: number) {
      return ctx.retries + a;
    });
    // @ts-expect-error an optional context parameter too
    app.task(function optional_ctx(ctx?: TaskContext) {
      return ctx?.retries;
    });
    // @ts-expect-error a context or null
    app.task(function nullable_ctx(ctx: TaskContext | null) {
      return ctx?.retries;
    });
    // @ts-expect-error the same with options that leave context out
    app.task({ name: "no_option_2", queue: "q" }, async (ctx: TaskContext, a: number) => ctx.retries + a);
    // shared defaults written with satisfies keep delay() typed
    const defaults = { queue: "mail", retryPolicy: { maxRetries: 3 } } satisfies TaskOptions;
    const notify = app.task({ ...defaults, name: "notify" }, async (to: string) => to);
    expectTypeOf(notify.delay).parameters.toEqualTypeOf<[to: string]>();
    // a first parameter of another type, or typed any, is fine
    const other = app.task(async function other(a: { taskId: string }, b: number) {
      return a.taskId + b;
    });
    expectTypeOf(other.delay).parameters.toEqualTypeOf<[{ taskId: string }, number]>();
    app.task(function never_first(_a: never) {
      return 1;
    });
    app.task(function undefined_first(_a: undefined, b: number) {
      return b;
    });
    app.task(function rest(...args: unknown[]) {
      return args.length;
    });
    // biome-ignore lint/suspicious/noExplicitAny: a parameter typed any is not taken for a context
    app.task(async function loose(a: any) {
      return String(a);
    });
  });

  it("checks the handler's return against a result schema's input, and adds its output to the result type", () => {
    // a transform: stored in place of the handler's value when results are checked
    const transformed = app.task(
      {
        name: "result_transform",
        validationMode: "strict",
        result: z.object({ n: z.number() }).transform((o) => String(o.n)),
      },
      async () => ({ n: 1 }),
    );
    expectTypeOf(transformed.delay()).resolves.toEqualTypeOf<AsyncResult<{ n: number } | string>>();
    // no transform: the schema's type
    const plain = app.task({ name: "result_plain", result: z.object({ ok: z.boolean() }) }, async () => ({ ok: true }));
    expectTypeOf(plain.delay()).resolves.toEqualTypeOf<AsyncResult<{ ok: boolean }>>();
    // with an argument schema and a context too
    const both = app.task(
      { name: "result_args", context: true, args: z.tuple([z.string()]), result: z.string() },
      async (ctx, s) => ctx.taskId + s,
    );
    expectTypeOf(both.delay("x")).resolves.toEqualTypeOf<AsyncResult<string>>();
    // a handler whose return the schema would refuse
    // @ts-expect-error the handler returns { ok: string }, the schema takes { ok: boolean }
    app.task({ name: "result_mismatch", result: z.object({ ok: z.boolean() }) }, async () => ({ ok: "yes" }));
    app.task(
      // @ts-expect-error the same with an argument schema
      { name: "result_mismatch_args", args: z.tuple([z.number()]), result: z.number() },
      async (n) => String(n),
    );
    // a return wider than the schema's input (a string where it takes "ok" | "err")
    app.task(
      // @ts-expect-error the handler may return any string
      { name: "result_enum", result: z.object({ status: z.enum(["ok", "err"]) }) },
      async (): Promise<{ status: string }> => ({ status: "ok" }),
    );
    // a handler that only throws keeps its result type (nothing is inferred from the options)
    const throwing = app.task({ name: "result_throws", deliveryMode: "at_least_once" }, async (_n: number) => {
      throw new Error("x");
    });
    expectTypeOf(throwing.delay(1)).resolves.toEqualTypeOf<AsyncResult<never>>();
    // options typed TaskOptions (the general overload): the schema typed StandardSchemaV1 adds nothing
    const loose: TaskOptions = { name: "result_loose", result: z.number() };
    const general = app.task(loose, async () => 1);
    expectTypeOf(general.delay()).resolves.toEqualTypeOf<AsyncResult<number>>();
    // ignoreResult: true still gives undefined
    const ignored = app.task({ name: "result_ignored", ignoreResult: true, result: z.number() }, async () => 1);
    expectTypeOf(ignored.delay()).resolves.toEqualTypeOf<AsyncResult<undefined>>();
  });

  it("takes delay() arguments from the argument schema's input", () => {
    const t = app.task(
      { name: "schema_task", args: z.tuple([z.string(), z.coerce.number()]) },
      async (email, count) => {
        expectTypeOf(email).toEqualTypeOf<string>();
        expectTypeOf(count).toEqualTypeOf<number>();
        return count;
      },
    );
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[string, unknown]>();
  });

  it("refuses at compile time an argument whose type is not JSON (Date, Map, Set, bigint, function), at any depth", () => {
    interface Order {
      id: string;
      lines: { sku: string; qty: number }[];
      note?: string;
    }
    const t = app.task(async function json_args(order: Order, tags: readonly string[], extra?: number) {
      return order.lines.length + tags.length + (extra ?? 0);
    });
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[Order, readonly string[], (number | undefined)?]>();
    void t.delay({ id: "1", lines: [{ sku: "a", qty: 1 }] }, ["x"]);

    const dated = app.task(async function dated(when: Date, _map: Map<string, number>) {
      return when.getTime();
    });
    // @ts-expect-error a Date is not JSON
    void dated.delay(new Date(), {} as never);
    // @ts-expect-error a Map is not JSON
    void dated.delay({} as never, new Map());
    const nested = app.task(async function nested(payload: { at: Date | string; ids: Set<number>; n: bigint }) {
      return payload;
    });
    // @ts-expect-error a Date inside an object
    void nested.delay({ at: new Date(), ids: {} as never, n: {} as never });
    // @ts-expect-error a Set inside an object
    void nested.delay({ at: "2026-12-04", ids: new Set([1]), n: {} as never });
    // @ts-expect-error a bigint
    void nested.delay({ at: "2026-12-04", ids: {} as never, n: 1n });
    const callback = app.task(async function callback(_f: () => void) {});
    // @ts-expect-error a function is not JSON
    void callback.send(() => {});

    // what the types cannot tell stays open
    const loose = app.task(async function loose(a: unknown, b: Record<string, unknown>) {
      return [a, b];
    });
    expectTypeOf(loose.delay).parameters.toEqualTypeOf<[unknown, Record<string, unknown>]>();
    void loose.delay(new Date(), { when: new Date() }); // (refused when it runs: a ValidationError)
  });

  it("JSON types pass as they are: JsonValue, recursive types, error-shaped data, index signatures", () => {
    type Tree = { name: string; children: Tree[] };
    interface Notice {
      name: string;
      message: string;
      to: string;
    }
    const t = app.task(async function json_kinds(
      value: JsonValue,
      tree: Tree,
      notice: Notice,
      bag: Record<string, number>,
    ) {
      return { value, tree, error: { name: notice.name, message: notice.message }, bag };
    });
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[JsonValue, Tree, Notice, Record<string, number>]>();
    const many = app.task(async function json_many(): Promise<JsonValue[]> {
      return [];
    });
    expectTypeOf(many.delay()).resolves.toEqualTypeOf<AsyncResult<JsonValue[]>>();
    const result = {} as Awaited<ReturnType<Awaited<ReturnType<typeof t.delay>>["get"]>>;
    expectTypeOf(result.error.message).toEqualTypeOf<string>();
  });

  it("an array item that may be undefined is typed NotJson (JSON has none: the task fails when it runs), in results and arguments", () => {
    const lookup = app.task(async function lookup(ids: number[]) {
      const names = new Map([[1, "a"]]);
      return ids.map((id) => names.get(id));
    });
    expectTypeOf(lookup.delay([1])).resolves.toEqualTypeOf<
      AsyncResult<(string | NotJson<"undefined in an array is not JSON: use null">)[]>
    >();
    const got = {} as Awaited<ReturnType<Awaited<ReturnType<typeof lookup.delay>>["get"]>>;
    // @ts-expect-error the stored result holds no undefined item
    const _names: (string | undefined)[] = got;
    const fixed = app.task(async function lookup_null(ids: number[]) {
      const names = new Map([[1, "a"]]);
      return ids.map((id) => names.get(id) ?? null);
    });
    expectTypeOf(fixed.delay([1])).resolves.toEqualTypeOf<AsyncResult<(string | null)[]>>();
    const holes = app.task(async function holes(
      _items: (number | undefined)[],
      _optional?: { a?: number | undefined },
    ) {});
    // @ts-expect-error an undefined item in an array argument
    void holes.delay([1, undefined]);
    void holes.delay([1, 2], { a: undefined }); // an optional property left unset is fine
  });

  it("generic code over Task<A, R> compiles", () => {
    async function enqueue<A extends unknown[], R>(task: Task<A, R>, ...args: A): Promise<R> {
      return (await task.delay(...args)).get();
    }
    async function later<A extends unknown[]>(task: Task<A>, args: A): Promise<string> {
      return (await task.applyAsync(args, { countdown: 1 })).taskId;
    }
    const add = app.task(async function generic_add(a: number, b: number) {
      return a + b;
    });
    expectTypeOf(enqueue(add, 1, 2)).resolves.toEqualTypeOf<number>();
    void later(add, [1, 2]);
  });

  it("a result part that is not JSON is typed NotJson (the task fails when it runs), so using it as such does not compile", () => {
    const when = app.task(async function when_result() {
      return { at: new Date(), id: "x" };
    });
    expectTypeOf(when.delay()).resolves.toEqualTypeOf<
      AsyncResult<{ at: NotJson<"a Date is not JSON: use date.toISOString()">; id: string }>
    >();
    const result = {} as Awaited<ReturnType<Awaited<ReturnType<typeof when.delay>>["get"]>>;
    // @ts-expect-error the stored result holds no Date
    void result.at.getTime();
    expectTypeOf(result.id).toEqualTypeOf<string>();
  });

  it("sync handlers give the plain result type", () => {
    const t = app.task({ name: "sync_task" }, (a: string) => a.length);
    expectTypeOf(t.delay("x")).resolves.toEqualTypeOf<AsyncResult<number>>();
  });
});

declare const options: TaskOptions;
declare const defaults: Partial<TaskOptions>;
declare const anySchema: StandardSchemaV1;

/** A wrapper that passes options typed `TaskOptions` through. */
function define<A extends unknown[], R>(o: TaskOptions, fn: (...args: A) => R | Promise<R>) {
  return app.task(o, fn);
}

describe("options whose types do not fix context or args (the general overload)", () => {
  it("accepts a TaskOptions variable: delay() takes any arguments, the result type is the handler's", () => {
    const t = app.task(options, async (a: number) => ({ a }));
    expectTypeOf(t.delay).parameters.toEqualTypeOf<unknown[]>();
    expectTypeOf(t.delay(1)).resolves.toEqualTypeOf<AsyncResult<{ a: number }>>();
  });

  it("accepts spread Partial<TaskOptions> defaults", () => {
    const t = app.task({ ...defaults, name: "from_defaults" }, (a: number) => a * 2);
    expectTypeOf(t.delay).parameters.toEqualTypeOf<unknown[]>();
    expectTypeOf(t.delay(1)).resolves.toEqualTypeOf<AsyncResult<number>>();
  });

  it("accepts a generic wrapper's options", () => {
    const t = define({ name: "wrapped" }, async (a: number) => String(a));
    expectTypeOf(t).toEqualTypeOf<Task<unknown[], string>>();
  });

  it("accepts { context: true } held in a variable (context: boolean)", () => {
    const withContext = { name: "ctx_var", context: true };
    const t = app.task(withContext, async (ctx: TaskContext, a: number) => `${ctx.taskId}:${a}`);
    expectTypeOf(t.delay).parameters.toEqualTypeOf<unknown[]>();
    expectTypeOf(t.delay(1)).resolves.toEqualTypeOf<AsyncResult<string>>();
  });

  it("an unannotated parameter it cannot check is unknown, not never", () => {
    app.task(options, async (a) => {
      expectTypeOf(a).toEqualTypeOf<unknown>();
    });
  });

  it("checks the context and types delay() from the handler when context is literal", () => {
    const on = app.task({ ...defaults, context: true }, async (ctx, a: number) => `${ctx.taskId}:${a}`);
    expectTypeOf(on.delay).parameters.toEqualTypeOf<[a: number]>();
    expectTypeOf(on.delay(1)).resolves.toEqualTypeOf<AsyncResult<string>>();
    const off = app.task({ ...defaults, context: false }, (a: number, b?: string) => a + (b ?? ""));
    expectTypeOf(off.delay).parameters.toEqualTypeOf<[a: number, b?: string | undefined]>();
    // @ts-expect-error context: true but the handler does not take a TaskContext first
    app.task({ ...defaults, context: true }, async (n: number) => n);
  });

  it("types delay() from the handler with an argument schema typed StandardSchemaV1 (output unknown)", () => {
    const t = app.task({ name: "any_schema", args: anySchema }, async (a: number) => a);
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[a: number]>();
  });

  it("types delay() from a known argument schema's input", () => {
    const t = app.task({ ...defaults, args: z.tuple([z.string(), z.coerce.number()]) }, (a: string) => a);
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[string, unknown]>();
  });
});

describe("the general overload keeps rejecting what the precise overloads reject", () => {
  it("a handler that does not match a literal context or a known argument schema", () => {
    // @ts-expect-error context: true but the handler does not take a TaskContext first
    app.task({ name: "no_ctx", context: true }, async (to: string) => to);
    // @ts-expect-error the handler's parameter does not take the schema's output
    app.task({ name: "wrong_arg", args: z.tuple([z.string()]) }, async (n: number) => n);
    // @ts-expect-error the handler does not take a TaskContext first
    app.task({ name: "wrong_ctx", args: z.tuple([z.string()]), context: true }, async (n: number) => n);
    // @ts-expect-error the handler needs more arguments than the schema gives
    app.task({ name: "too_many", args: z.tuple([z.string()]) }, async (a: string, b: number) => a + b);
  });

  it("a misspelt or mistyped option", () => {
    // @ts-expect-error not an option
    app.task({ name: "typo", timout: 5 }, async (a: number) => a);
    // @ts-expect-error not an option
    app.task({ ...defaults, timout: 5 }, async (a: number) => a);
    // @ts-expect-error queue is a string
    app.task({ name: "bad_queue", context: true, queue: 1 }, async (ctx: TaskContext) => ctx.taskId);
  });
});

describe("argument schemas", () => {
  it("must output an argument list (a tuple or an array)", () => {
    const object = z.object({ a: z.string() });
    // @ts-expect-error an object is not an argument list
    app.task({ name: "object_args", args: object }, async (o: { a: string }) => o);
    // @ts-expect-error an object is not an argument list
    app.task({ name: "object_ctx", context: true, args: object }, async (_c: TaskContext, o: { a: string }) => o);
    // @ts-expect-error an object is not an argument list
    app.task({ ...defaults, args: object }, async (o: { a: string }) => o);
    const list = app.task({ name: "array_args", args: z.array(z.number()) }, async (...n) => n.length);
    expectTypeOf(list.delay).parameters.toEqualTypeOf<number[]>();
  });

  it("a schema whose input is unknown takes any arguments in delay()", () => {
    const schema = {} as StandardSchemaV1<unknown, [number]>;
    const t = app.task({ name: "unknown_input", args: schema }, async (n) => n);
    expectTypeOf(t.delay).parameters.toEqualTypeOf<unknown[]>();
    expectTypeOf(t.delay(1)).resolves.toEqualTypeOf<AsyncResult<number>>();
  });
});

describe("ignoreResult", () => {
  it("given literally as true, the result type is undefined", () => {
    const plain = app.task({ name: "ignored", ignoreResult: true }, async (a: number) => a);
    expectTypeOf(plain.delay(1)).resolves.toEqualTypeOf<AsyncResult<undefined>>();
    const ctx = app.task({ name: "ignored_ctx", ignoreResult: true, context: true }, async (_c, a: number) => a);
    expectTypeOf(ctx.delay(1)).resolves.toEqualTypeOf<AsyncResult<undefined>>();
    const schema = app.task({ name: "ignored_args", ignoreResult: true, args: z.tuple([z.number()]) }, (a) => a);
    expectTypeOf(schema.delay(1)).resolves.toEqualTypeOf<AsyncResult<undefined>>();
    const general = app.task({ ...defaults, ignoreResult: true }, async (a: number) => a);
    expectTypeOf(general.delay(1)).resolves.toEqualTypeOf<AsyncResult<undefined>>();
  });

  it("false or a boolean keeps the handler's result type", () => {
    const kept = app.task({ name: "kept", ignoreResult: false }, async (a: number) => a);
    expectTypeOf(kept.delay(1)).resolves.toEqualTypeOf<AsyncResult<number>>();
    const flag = { name: "flag", ignoreResult: true };
    const flagged = app.task(flag, async (a: number) => a);
    expectTypeOf(flagged.delay(1)).resolves.toEqualTypeOf<AsyncResult<number>>();
  });
});

describe("get()", () => {
  it("gives null for a handler that returns nothing (results are JSON), the handler's type otherwise", async () => {
    const nothing = app.task({ name: "returns_nothing" }, async (_n: number) => {});
    const maybe = app.task({ name: "returns_maybe" }, (n: number) => (n > 0 ? n : undefined));
    const value = app.task({ name: "returns_value" }, async (n: number) => ({ n }));
    expectTypeOf((await nothing.delay(1)).get()).resolves.toEqualTypeOf<null>();
    expectTypeOf((await maybe.delay(1)).get()).resolves.toEqualTypeOf<number | null>();
    expectTypeOf((await value.delay(1)).get()).resolves.toEqualTypeOf<{ n: number }>();
  });

  it("gives null for nothing with a handler registered without options too", async () => {
    const nothing = app.task(async function returnsNothingBare(_n: number) {});
    const maybe = app.task(function returnsMaybeBare(n: number) {
      return n > 0 ? n : undefined;
    });
    expectTypeOf((await nothing.delay(1)).get()).resolves.toEqualTypeOf<null>();
    expectTypeOf((await maybe.delay(1)).get()).resolves.toEqualTypeOf<number | null>();
  });

  it("TaskContext stays structural: an object of its public members stands in for it (a handler's unit test)", () => {
    expectTypeOf<Pick<TaskContext, keyof TaskContext>>().toMatchTypeOf<TaskContext>();
    expectTypeOf<TaskContext["signal"]>().toEqualTypeOf<AbortSignal>();
  });
});
