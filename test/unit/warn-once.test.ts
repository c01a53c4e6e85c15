/**
 * The logger of adapters built without one (`processWarningLogger`): process warnings, once per
 * message, unless a running worker's logger takes its lines (`routeUnownedLogs`).
 */
import { describe, expect, it } from "vitest";
import { processWarningLogger, routeUnownedLogs } from "../../src/core/warn-once.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

/** Resolves with the next process warning whose message starts with `prefix`. */
function nextWarning(prefix: string): Promise<Error & { code?: string }> {
  return new Promise((resolve) => {
    const listener = (warning: Error & { code?: string }) => {
      if (!warning.message.startsWith(prefix)) return;
      process.off("warning", listener);
      resolve(warning);
    };
    process.on("warning", listener);
  });
}

describe("processWarningLogger", () => {
  it("without a route: warnings and errors are process warnings with the code and err, debug and info are dropped", async () => {
    const log = processWarningLogger("CHICORY_TEST_UNROUTED");
    const warned = nextWarning("unrouted trouble");
    log.info("unrouted news");
    log.warn({ err: "boom" }, "unrouted trouble");
    const warning = await warned;
    expect([warning.message, warning.code]).toEqual(["unrouted trouble: boom", "CHICORY_TEST_UNROUTED"]);
  });

  it("routed: every level goes to the latest running worker's logger with the adapter's code and fields; each route ends once", async () => {
    const first = capturingLogger();
    const second = capturingLogger();
    const log = processWarningLogger("CHICORY_TEST_ROUTED").child({ queue: "q" });
    const endFirst = routeUnownedLogs(first.logger);
    const endSecond = routeUnownedLogs(second.logger);
    log.debug({ n: 1 }, "to the second");
    endSecond();
    log.error("to the first");
    endSecond(); // a second call ends nothing more
    log.info("still to the first");
    endFirst();
    const warned = nextWarning("routed nowhere");
    log.warn("routed nowhere");
    expect(second.lines).toEqual([
      { level: "debug", message: "to the second", fields: { component: "CHICORY_TEST_ROUTED", queue: "q", n: 1 } },
    ]);
    expect(first.lines.map((line) => [line.level, line.message])).toEqual([
      ["error", "to the first"],
      ["info", "still to the first"],
    ]);
    expect((await warned).code).toBe("CHICORY_TEST_ROUTED");
  });
});

describe("two copies of the module in one process (the CLI loads a TypeScript app through tsx)", () => {
  it("an adapter of one copy logs to a worker route set up by the other, and a warning is said once by both", async () => {
    const copy = (await import(
      /* @vite-ignore */ `../../src/core/warn-once.js?copy=${Date.now()}`
    )) as typeof import("../../src/core/warn-once.js");
    expect(copy.routeUnownedLogs).not.toBe(routeUnownedLogs); // (a real second copy)
    const worker = capturingLogger();
    const end = routeUnownedLogs(worker.logger);
    copy.processWarningLogger("CHICORY_TEST_COPY").warn("from the app's copy");
    end();
    expect(worker.lines.map((line) => [line.level, line.message, line.fields.component])).toEqual([
      ["warn", "from the app's copy", "CHICORY_TEST_COPY"],
    ]);
    const seen: string[] = [];
    const listener = (warning: Error) => {
      if (warning.message.startsWith("said once")) seen.push(warning.message);
    };
    process.on("warning", listener);
    const warned = nextWarning("said once");
    copy.warnOnce("said-once", "said once", "CHICORY_TEST_COPY");
    const { warnOnce } = await import("../../src/core/warn-once.js");
    warnOnce("said-once", "said once", "CHICORY_TEST_COPY");
    await warned;
    await new Promise((resolve) => setImmediate(resolve));
    process.off("warning", listener);
    expect(seen).toEqual(["said once"]);
  });
});
