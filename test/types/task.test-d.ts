import { describe, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { type AsyncResult, Chicory, MemoryBackend, MemoryBroker, type TaskContext } from "../../src/index.js";

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

  it("does not take the context in delay()", () => {
    const t = app.task({ name: "with_ctx", context: true }, async (ctx: TaskContext, to: string) => {
      return `${ctx.taskId}:${to}`;
    });
    expectTypeOf(t.delay).parameters.toEqualTypeOf<[string]>();
    expectTypeOf(t.delay("x")).resolves.toEqualTypeOf<AsyncResult<string>>();
    // @ts-expect-error the context is not an argument of delay()
    void t.delay({} as TaskContext, "x");
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

  it("sync handlers give the plain result type", () => {
    const t = app.task({ name: "sync_task" }, (a: string) => a.length);
    expectTypeOf(t.delay("x")).resolves.toEqualTypeOf<AsyncResult<number>>();
  });
});
