/**
 * Where the test services live (loopback defaults, overridable by env) and whether they
 * can be reached. With CI=true an unreachable service fails the run instead of skipping.
 */
import { randomBytes } from "node:crypto";
import { connect } from "node:net";

export const SERVICES = {
  redis: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0",
  rabbitmq: process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672",
  postgres: process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test",
  mysql: process.env.TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test",
} as const;

export type ServiceName = keyof typeof SERVICES;

const isCi = process.env.CI === "true" || process.env.CI === "1";

function portOf(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  const defaults: Record<string, number> = { "redis:": 6379, "amqp:": 5672, "postgres:": 5432, "mysql:": 3306 };
  return { host: parsed.hostname || "127.0.0.1", port: Number(parsed.port) || defaults[parsed.protocol] || 0 };
}

/** True when a TCP connection to the service succeeds within 1 s. */
export function reachable(name: ServiceName): Promise<boolean> {
  const { host, port } = portOf(SERVICES[name]);
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/**
 * Resolves to true when the tests of `name` should be skipped: the service is unreachable
 * and this is not CI. In CI an unreachable service throws, failing the file.
 */
export async function skipUnless(name: ServiceName): Promise<boolean> {
  if (await reachable(name)) return false;
  if (isCi) throw new Error(`${name} is not reachable at ${SERVICES[name]} (CI=true: service tests must not skip)`);
  console.warn(`skipping ${name} tests: ${SERVICES[name]} is not reachable`);
  return true;
}

/** A random name for test isolation (queue, key prefix, table prefix). */
export function uniqueName(prefix = "t"): string {
  return `${prefix}${randomBytes(5).toString("hex")}`;
}

/** True when a TCP connection to 127.0.0.1:`port` succeeds (a server the test started is listening). */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
