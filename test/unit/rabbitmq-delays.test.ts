import { describe, expect, it } from "vitest";
import {
  DEFAULT_DELAY_LEVELS_MS,
  planDelay,
  REMAINING_DELAY_HEADER,
  remainingDelayMs,
} from "../../src/brokers/rabbitmq/rabbitmq-delays.js";
import { resolveRabbitMqSettings } from "../../src/brokers/rabbitmq/rabbitmq-options.js";
import { ConfigurationError } from "../../src/errors.js";

describe("rabbitmq delay planning", () => {
  const levels = [1000, 5000, 10_000, 30_000];

  it("rounds up to the next level, never down", () => {
    expect(planDelay(7000, levels)).toEqual({ levelMs: 10_000, remainingMs: 0 });
    expect(planDelay(1000, levels)).toEqual({ levelMs: 1000, remainingMs: 0 });
    expect(planDelay(1, levels)).toEqual({ levelMs: 1000, remainingMs: 0 });
    expect(planDelay(5000.2, levels)).toEqual({ levelMs: 10_000, remainingMs: 0 });
  });

  it("chains delays beyond the top level", () => {
    expect(planDelay(75_000, levels)).toEqual({ levelMs: 30_000, remainingMs: 45_000 });
  });

  it("has nothing to plan for zero or negative delays", () => {
    expect(planDelay(0, levels)).toBeNull();
    expect(planDelay(-5, levels)).toBeNull();
  });

  it("reads the remaining-delay header leniently", () => {
    expect(remainingDelayMs({ [REMAINING_DELAY_HEADER]: "1500" })).toBe(1500);
    expect(remainingDelayMs({ [REMAINING_DELAY_HEADER]: 20 })).toBe(20);
    expect(remainingDelayMs({ [REMAINING_DELAY_HEADER]: "junk" })).toBe(0);
    expect(remainingDelayMs(undefined)).toBe(0);
  });

  it("default levels are sorted and reach one day", () => {
    expect([...DEFAULT_DELAY_LEVELS_MS].sort((a, b) => a - b)).toEqual(DEFAULT_DELAY_LEVELS_MS);
    expect(DEFAULT_DELAY_LEVELS_MS.at(-1)).toBe(86_400_000);
  });
});

describe("rabbitmq settings", () => {
  it("reads CHICORY_BROKER_RABBITMQ_* from the environment", () => {
    const settings = resolveRabbitMqSettings({
      env: {
        CHICORY_BROKER_RABBITMQ_HOST: "rabbit",
        CHICORY_BROKER_RABBITMQ_PORT: "5673",
        CHICORY_BROKER_RABBITMQ_USERNAME: "u",
        CHICORY_BROKER_RABBITMQ_PASSWORD: "p@ss",
        CHICORY_BROKER_RABBITMQ_VHOST: "/",
        CHICORY_BROKER_RABBITMQ_PREFETCH_COUNT: "8",
        CHICORY_BROKER_RABBITMQ_QUEUE_MAX_LENGTH: "1000",
        CHICORY_BROKER_RABBITMQ_MESSAGE_TTL: "60",
        CHICORY_BROKER_RABBITMQ_QUEUE_TYPE: "quorum",
        CHICORY_BROKER_RABBITMQ_DELIVERY_LIMIT: "5",
        CHICORY_BROKER_RABBITMQ_RECONNECT_DELAY: "0.5",
        CHICORY_BROKER_RABBITMQ_MAX_RECONNECT_DELAY: "3",
        CHICORY_BROKER_RABBITMQ_PREFIX: "app",
      },
    });
    expect(settings.url).toBe("amqp://u:p%40ss@rabbit:5673/%2F");
    expect(settings).toMatchObject({
      prefetchCount: 8,
      queueMaxLength: 1000,
      messageTtlMs: 60_000,
      queueType: "quorum",
      deliveryLimit: 5,
      reconnectDelayMs: 500,
      maxReconnectDelayMs: 3000,
      prefix: "app",
      durable: true,
      maxPriority: null,
    });
  });

  it("options win over the environment; defaults are safe", () => {
    const settings = resolveRabbitMqSettings({
      env: { CHICORY_BROKER_RABBITMQ_PREFETCH_COUNT: "8" },
      prefetchCount: 2,
    });
    expect(settings.prefetchCount).toBe(2);
    const defaults = resolveRabbitMqSettings({ env: {} });
    expect(defaults.prefetchCount).toBeUndefined(); // follows the worker's concurrency
    expect(defaults).toMatchObject({
      queueType: "classic",
      durable: true,
      publishTimeoutMs: 10_000,
    });
  });

  it("fails fast naming the variable", () => {
    expect(() => resolveRabbitMqSettings({ env: { CHICORY_BROKER_RABBITMQ_QUEUE_TYPE: "stream" } })).toThrow(
      /CHICORY_BROKER_RABBITMQ_QUEUE_TYPE/,
    );
    expect(() => resolveRabbitMqSettings({ env: { CHICORY_BROKER_RABBITMQ_PREFETCH_COUNT: "0" } })).toThrow(
      ConfigurationError,
    );
    expect(() => resolveRabbitMqSettings({ env: {}, url: "redis://x" })).toThrow(/amqp/);
  });
});
