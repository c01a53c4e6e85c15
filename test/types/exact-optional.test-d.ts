/**
 * Type-checked with `exactOptionalPropertyTypes` on (tsconfig.types.json), as `tsc --init`
 * projects are: options a caller fills from values that may be `undefined` compile, as the
 * run time accepts them.
 */
import { describe, expectTypeOf, it } from "vitest";
import { type AsyncResult, Chicory, createLogger, MemoryBroker, RetryPolicy, Worker } from "../../src/index.js";
import { RabbitMqBroker } from "../../src/rabbitmq.js";

declare const maybeText: string | undefined;
declare const maybeNumber: number | undefined;
declare const maybeFlag: boolean | undefined;

describe("options that may be undefined (exactOptionalPropertyTypes)", () => {
  it("compile for the app, tasks, dispatch, results and workers", () => {
    const app = new Chicory({ broker: maybeText, backend: maybeText, config: { brokerUrl: maybeText } });
    const add = app.task(
      { name: maybeText, queue: maybeText, timeout: maybeNumber, priority: maybeNumber, ignoreResult: maybeFlag },
      async (a: number, b: number) => a + b,
    );
    const result = add.applyAsync([1, 2], { countdown: maybeNumber, queue: maybeText, taskId: maybeText });
    expectTypeOf(result).toEqualTypeOf<Promise<AsyncResult<number>>>();
    void result.then((r) => r.get({ timeout: maybeNumber, pollInterval: maybeNumber }));
    new Worker(app, { concurrency: maybeNumber, queue: maybeText });
  });

  it("compile for retry policies, the memory and RabbitMQ brokers, the logger and a worker's logger", () => {
    const app = new Chicory({ broker: new MemoryBroker({ claimMinIdleMs: maybeNumber }) });
    app.task(
      { name: "r", retryPolicy: { maxRetries: maybeNumber, retryDelay: maybeNumber, jitter: maybeFlag } },
      async () => 1,
    );
    new RetryPolicy({ maxDelay: maybeNumber, backoff: undefined, retryOn: undefined });
    new RabbitMqBroker({ host: maybeText, port: maybeNumber, prefetchCount: maybeNumber, durable: maybeFlag });
    const logger = createLogger({ level: undefined, toStderr: maybeFlag });
    new Worker(app, { logger: Math.random() > 1 ? logger : undefined });
  });
});
