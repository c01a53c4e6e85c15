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
