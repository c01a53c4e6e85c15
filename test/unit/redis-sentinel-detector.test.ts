/**
 * The listener Chicory gives the sentinel connections of ioredis's failover detector
 * (`hearSentinelDetector`): one line per sentinel instead of ioredis's stack traces, and a
 * client of another shape left as it is. A fake client stands in for ioredis (the integration
 * test `redis-sentinel.test.ts` runs the real one).
 */
import { EventEmitter } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { routeUnownedLogs } from "../../src/core/warn-once.js";
import type { RedisClientLike } from "../../src/redis/redis-client.js";
import { hearSentinelDetector } from "../../src/redis/redis-connect.js";
import { capturingLogger } from "../helpers/capturing-logger.js";

const fakeClient = (make: (endpoint: { host: string; port: number }) => unknown) =>
  ({ connector: { connectToSentinel: make } }) as unknown as RedisClientLike & {
    connector: { connectToSentinel(endpoint: { host: string; port: number }): unknown };
  };

describe("hearSentinelDetector", () => {
  const stops: Array<() => void> = [];
  afterEach(() => {
    for (const stop of stops.splice(0)) stop();
  });

  it("gives each sentinel connection an error listener that logs once per sentinel", () => {
    const log = capturingLogger();
    stops.push(routeUnownedLogs(log.logger));
    const client = fakeClient(() => new EventEmitter());
    hearSentinelDetector(client);
    const first = client.connector.connectToSentinel({ host: "10.0.0.9", port: 26001 }) as EventEmitter;
    const again = client.connector.connectToSentinel({ host: "10.0.0.9", port: 26001 }) as EventEmitter;
    expect(first.listenerCount("error")).toBe(1);
    // an emitter with a listener does not throw on "error" (ioredis would print a stack instead)
    first.emit("error", new Error("connect ECONNREFUSED 10.0.0.9:26001"));
    again.emit("error", new Error("connect ECONNREFUSED 10.0.0.9:26001"));
    const lines = log.lines.filter((line) => /sentinel 10\.0\.0\.9:26001 refused or did not answer/.test(line.message));
    expect(lines).toHaveLength(1);
    expect(lines[0]?.fields).toMatchObject({ sentinel: "10.0.0.9:26001", err: "connect ECONNREFUSED 10.0.0.9:26001" });
  });

  it("leaves a client of another shape as it is", () => {
    const plain = {} as RedisClientLike;
    expect(() => hearSentinelDetector(plain)).not.toThrow();
    const odd = { value: 1 };
    const client = fakeClient(() => odd); // a sentinel connection without `on`
    hearSentinelDetector(client);
    expect(client.connector.connectToSentinel({ host: "h", port: 1 })).toBe(odd);
  });
});
