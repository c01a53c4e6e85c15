/**
 * A12 unauthenticated access (RELIABILITY §2.10 A12, §3.10): the Redis broker and backend
 * against a redis-server this file starts itself (never the shared :6379) with a password, an
 * ACL user, and a TLS port with a self-signed certificate made at test time; the RabbitMQ
 * broker against the shared node with a wrong password.
 *
 * Prerequisites, checked explicitly at load time (`requirement()`):
 * - `redis-server` on PATH, built with TLS (`--tls-port` accepted), and `openssl` on PATH;
 * - the shared RabbitMQ on loopback (`skipUnless("rabbitmq")`).
 * A missing prerequisite skips its tests locally with the reason printed; with `CI=true` it
 * fails the file instead (no silent skip in CI).
 *
 * amqps:// certificate verification is checked against a TLS endpoint of this file standing in
 * for RabbitMQ (the shared node has no TLS listener and must not be reconfigured): the TLS
 * handshake only, not AMQP over TLS.
 * Not covered here (see docs/reliability/security.md): `guest` from a non-loopback address
 * (the shared RabbitMQ listens on 127.0.0.1 only, and RabbitMQ checks the address the
 * connection arrived on, so every connection it can accept is a loopback one).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { inspect } from "node:util";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RedisBackend } from "../../src/backends/redis/index.js";
import { RabbitMqBroker } from "../../src/brokers/rabbitmq/index.js";
import { RedisBroker } from "../../src/brokers/redis/index.js";
import type { EnvMap } from "../../src/core/env.js";
import {
  BackendConnectionError,
  BrokerConnectionError,
  Chicory,
  ChicoryError,
  ConfigurationError,
  Worker,
} from "../../src/index.js";
import { SERVICES, skipUnless, uniqueName } from "../helpers/services.js";
import { cliEnv, requireBuild, runCli, startCli } from "../integration/cli/cli-process.js";
import { freePort } from "../reliability/infra/redis-server.js";
import { recordingLogger } from "./security-helpers.js";

const isCi = process.env.CI === "true" || process.env.CI === "1";

/** Skips (locally, reason printed) or throws (CI) when a prerequisite is missing. */
function requirement(ok: boolean, what: string): boolean {
  if (ok) return false;
  if (isCi) throw new Error(`A12 access tests: ${what} (CI=true: these tests must not skip)`);
  console.warn(`skipping A12 access tests: ${what}`);
  return true;
}

function onPath(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// Passwords are canaries: they must never appear in any error text or CLI output.
const PASSWORD = "AuthCanary5kq2";
const WRONG = "WrongCanary8vz4";
const ACL_USER = "chicory-app";
const ACL_PASSWORD = "AclCanary3mx7";

const work = mkdtempSync(join(tmpdir(), "chicory-a12-"));
const servers: ChildProcess[] = [];
afterAll(async () => {
  for (const child of servers) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
});

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

/** Starts `redis-server args`, resolves once it logs that it accepts connections. */
async function startRedis(args: string[], label: string): Promise<{ ok: true } | { ok: false; output: string }> {
  const child = spawn("redis-server", [...args, "--save", "", "--appendonly", "no", "--dir", work], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  servers.push(child);
  let output = "";
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, output: `${label}: not ready in 10 s\n${output}` }), 10_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve({ ok: true });
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ ok: false, output: `${label}: exited with ${code}\n${output}` });
    });
  });
}

const skipRedis = requirement(onPath("redis-server"), "redis-server is not on PATH");
const skipTlsTools =
  skipRedis || requirement(onPath("openssl"), "openssl is not on PATH (needed for the test certificate)");

// --- the password-protected server (default user with a password, plus an ACL user) -------
let authPort = 0;
if (!skipRedis) {
  authPort = await freePort();
  const started = await startRedis(
    ["--port", String(authPort), "--bind", "127.0.0.1", "--requirepass", PASSWORD],
    "auth redis-server",
  );
  if (!started.ok) throw new Error(started.output);
  const admin = new Redis({ port: authPort, host: "127.0.0.1", password: PASSWORD, lazyConnect: true });
  await admin.connect();
  await admin.call("ACL", "SETUSER", ACL_USER, "on", `>${ACL_PASSWORD}`, "~*", "&*", "+@all");
  admin.disconnect();
}

// --- the TLS server: self-signed certificate for DNS:localhost only, no plain-text port -----
const certFile = join(work, "cert.pem");
const keyFile = join(work, "key.pem");
let tlsPort = 0;
let skipTls = skipTlsTools;
if (!skipTls) {
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"],
      ...["-addext", "subjectAltName=DNS:localhost", "-keyout", keyFile, "-out", certFile],
    ],
    { stdio: "ignore" },
  );
  tlsPort = await freePort();
  const started = await startRedis(
    [
      ...["--port", "0", "--tls-port", String(tlsPort), "--bind", "127.0.0.1", "-::1"],
      ...["--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile],
      ...["--tls-auth-clients", "no", "--requirepass", PASSWORD],
    ],
    "TLS redis-server",
  );
  if (!started.ok) {
    // A build without TLS rejects the tls-* directives; anything else is a real failure.
    if (!/Bad directive|tls-port/i.test(started.output)) throw new Error(started.output);
    skipTls = requirement(false, "this redis-server build has no TLS support (--tls-port rejected)");
  }
}
const skipRabbit = await skipUnless("rabbitmq");

/** Everything an error shows: util.inspect, message, stack and the chain of causes. */
function errorText(error: unknown): string {
  const parts: string[] = [inspect(error, { depth: 8 })];
  let current: unknown = error;
  for (let i = 0; i < 8 && current instanceof Error; i++) {
    parts.push(current.message, current.stack ?? "");
    current = current.cause;
  }
  return parts.join("\n");
}

function expectNoSecret(text: string, where: string): void {
  for (const secret of [PASSWORD, WRONG, ACL_PASSWORD]) {
    const at = text.indexOf(secret);
    if (at >= 0) throw new Error(`${where} leaks a password: ...${text.slice(Math.max(0, at - 120), at + 40)}...`);
  }
}

/** Connects and returns the error it failed with (the test fails if it connects). */
async function connectError(target: { connect(): Promise<void>; disconnect(): Promise<void> }): Promise<Error> {
  cleanups.push(() => target.disconnect().catch(() => undefined));
  const outcome = await Promise.race([
    target.connect().then(
      () => new Error("connected, but it should have been refused"),
      (error: unknown) => error,
    ),
    new Promise<Error>((resolve) =>
      setTimeout(() => resolve(new Error("connect neither failed nor succeeded in 10 s")), 10_000),
    ),
  ]);
  expect(outcome).toBeInstanceOf(ChicoryError);
  return outcome as Error;
}

/** A broker + backend on `url`, a worker, and one job that must come back with its result. */
async function roundTrip(url: string, env: EnvMap = {}, tls?: Record<string, unknown>): Promise<unknown> {
  const prefix = uniqueName("a12");
  const broker = new RedisBroker({ url, keyPrefix: prefix, blockMs: 200, env, ...(tls ? { tls } : {}) });
  const backend = new RedisBackend({ url, keyPrefix: prefix, env, ...(tls ? { tls } : {}) });
  const app = new Chicory({ broker, backend, config: { env: {} } });
  cleanups.push(() => app.disconnect());
  const echo = app.task({ name: "echo" }, async (value: string) => `echo:${value}`);
  const worker = new Worker(app, { concurrency: 2, logger: recordingLogger() });
  await worker.start();
  cleanups.push(() => worker.stop(2));
  const result = await echo.delay("ping");
  return result.get({ timeout: 10 });
}

describe.skipIf(skipRedis)("A12 Redis authentication (own redis-server with requirepass and an ACL user)", () => {
  const url = (auth: string) => `redis://${auth}127.0.0.1:${authPort}/0`;

  it("without a password the broker and the backend refuse to start: NOAUTH, named as such", async () => {
    const brokerError = await connectError(new RedisBroker({ url: url(""), env: {} }));
    expect(brokerError).toBeInstanceOf(BrokerConnectionError);
    expect(brokerError.message).toMatch(/^Redis broker: cannot connect to redis:\/\/127\.0\.0\.1:\d+\/0: NOAUTH/);
    expect(brokerError.message).toContain("authentication required");
    expect(brokerError.message).toContain("CHICORY_BROKER_REDIS_PASSWORD");
    const backendError = await connectError(new RedisBackend({ url: url(""), env: {} }));
    expect(backendError).toBeInstanceOf(BackendConnectionError);
    expect(backendError.message).toMatch(/NOAUTH.*CHICORY_BACKEND_REDIS_PASSWORD/);
  });

  it("a wrong password (default user, ACL user) is refused with WRONGPASS; the password never shows", async () => {
    for (const auth of [`:${WRONG}@`, `${ACL_USER}:${WRONG}@`, `nobody:${ACL_PASSWORD}@`]) {
      for (const target of [
        new RedisBroker({ url: url(auth), env: {} }),
        new RedisBackend({ url: url(auth), env: {} }),
      ]) {
        const error = await connectError(target);
        expect(error).toBeInstanceOf(target instanceof RedisBroker ? BrokerConnectionError : BackendConnectionError);
        expect(error.message).toContain(`redis://${auth.split(":")[0]}:***@127.0.0.1:${authPort}/0`);
        expect(error.message).toContain("WRONGPASS");
        expect(error.message).toContain("authentication failed");
        // the driver's reply error carries the HELLO/AUTH arguments; none of it may surface
        expectNoSecret(errorText(error), `${target.kind} error for ${auth.split(":")[0] || "default"}`);
      }
    }
  });

  it("with the right password a job round-trips, as the default user and as an ACL user", async () => {
    expect(await roundTrip(url(`:${PASSWORD}@`))).toBe("echo:ping");
    expect(await roundTrip(url(`${ACL_USER}:${ACL_PASSWORD}@`))).toBe("echo:ping");
  });

  it("the CLI worker with a wrong password exits 1 with one line naming WRONGPASS, password masked", async () => {
    requireBuild();
    const result = await runCli(
      ["worker", "test/fixtures/cli-app.mjs", "-c", "1"],
      cliEnv({ CHICORY_BROKER_URL: url(`${ACL_USER}:${WRONG}@`), CHICORY_WORKER_LOG_LEVEL: "DEBUG" }),
      { timeoutMs: 20_000 },
    );
    const output = `${result.stdout}\n${result.stderr}`;
    expect(result.code).toBe(1);
    expectNoSecret(output, "CLI output");
    expect(result.stderr).toMatch(/cannot connect to redis:\/\/chicory-app:\*\*\*@127\.0\.0\.1:\d+\/0: WRONGPASS/);
  });
});

describe.skipIf(skipTls)("A12 Redis TLS (own redis-server, self-signed certificate made at test time)", () => {
  const url = (host = "localhost") => `rediss://:${PASSWORD}@${host}:${tlsPort}/0`;
  const caEnv = (): EnvMap => ({ CHICORY_BROKER_REDIS_TLS_CA: certFile, CHICORY_BACKEND_REDIS_TLS_CA: certFile });

  it("rediss:// to a self-signed server is refused by default: certificate error named, TLS_CA hinted", async () => {
    for (const target of [new RedisBroker({ url: url(), env: {} }), new RedisBackend({ url: url(), env: {} })]) {
      const error = await connectError(target);
      const variable = target instanceof RedisBroker ? "CHICORY_BROKER_REDIS_TLS_CA" : "CHICORY_BACKEND_REDIS_TLS_CA";
      expect(error.message).toContain(`rediss://:***@localhost:${tlsPort}/0: self-signed certificate`);
      expect(error.message).toContain("[DEPTH_ZERO_SELF_SIGNED_CERT]");
      expect(error.message).toContain(variable);
      expect((error.cause as { code?: string }).code).toBe("DEPTH_ZERO_SELF_SIGNED_CERT");
      expectNoSecret(errorText(error), `${target.kind} TLS error`);
    }
  });

  it("with the CA supplied (TLS_CA variable or the tls.ca option) a job round-trips over TLS", async () => {
    expect(await roundTrip(url(), caEnv())).toBe("echo:ping");
    expect(await roundTrip(url(), {}, { ca: readFileSync(certFile) })).toBe("echo:ping");
  });

  it("the CA does not switch off host name checks: 127.0.0.1 is not in the certificate", async () => {
    const error = await connectError(new RedisBroker({ url: url("127.0.0.1"), env: caEnv() }));
    expect((error.cause as { code?: string }).code).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
    expect(error.message).toContain("not valid for this host name");
  });

  it("verification is off only by explicit opt-in (TLS_REJECT_UNAUTHORIZED=false), and that warns", async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    cleanups.push(() => process.off("warning", onWarning));
    const env = {
      CHICORY_BROKER_REDIS_TLS_REJECT_UNAUTHORIZED: "false",
      CHICORY_BACKEND_REDIS_TLS_REJECT_UNAUTHORIZED: "false",
    };
    expect(await roundTrip(url("127.0.0.1"), env)).toBe("echo:ping");
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
    const ours = warnings.filter((w) => (w as { code?: string }).code === "CHICORY_TLS_UNVERIFIED");
    expect(ours.map((w) => w.message).join("\n")).toMatch(/Redis broker: TLS certificate verification is disabled/);
    expect(ours.map((w) => w.message).join("\n")).toMatch(/Redis backend: TLS certificate verification is disabled/);
    expectNoSecret(ours.map((w) => w.message).join("\n"), "warning");
    // "true" (or unset) keeps verification: the same server is refused again
    const verified = await connectError(
      new RedisBroker({ url: url(), env: { CHICORY_BROKER_REDIS_TLS_REJECT_UNAUTHORIZED: "true" } }),
    );
    expect((verified.cause as { code?: string }).code).toBe("DEPTH_ZERO_SELF_SIGNED_CERT");
  });

  it("the CLI worker: refused without the CA (one clear line), serves jobs with CHICORY_*_REDIS_TLS_CA", async () => {
    requireBuild();
    const refused = await runCli(
      ["worker", "test/fixtures/cli-app.mjs", "-c", "1"],
      cliEnv({ CHICORY_BROKER_URL: url() }),
      { timeoutMs: 20_000 },
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/self-signed certificate.*CHICORY_BROKER_REDIS_TLS_CA/);
    expectNoSecret(`${refused.stdout}\n${refused.stderr}`, "CLI output (refused)");

    const worker = startCli(
      ["worker", "test/fixtures/cli-app.mjs", "-c", "2"],
      cliEnv({ CHICORY_BROKER_URL: url(), ...caEnv() }),
    );
    cleanups.push(async () => {
      if (worker.child.exitCode === null) worker.child.kill("SIGKILL");
      await worker.exited;
    });
    await worker.waitForStderr(/"msg":"worker started"/, 20_000);
    const producer = new Chicory({ broker: url(), config: { env: caEnv() } });
    cleanups.push(() => producer.disconnect());
    const add = producer.task({ name: "add" }, async (a: number, b: number) => a + b);
    const result = await add.delay(2, 3);
    expect(await result.get({ timeout: 10 })).toBe(5);
    worker.child.kill("SIGTERM");
    expect((await worker.exited).code).toBe(0);
    expectNoSecret(`${worker.output.stdout}\n${worker.output.stderr}`, "CLI output (TLS worker)");
  }, 45_000);
});

describe.skipIf(skipRabbit)("A12 RabbitMQ authentication (shared node)", () => {
  const wrongUrl = (() => {
    const u = new URL(SERVICES.rabbitmq);
    u.password = WRONG;
    return u.toString();
  })();

  it("a wrong password is refused with ACCESS_REFUSED surfaced; the password never shows", async () => {
    const error = await connectError(new RabbitMqBroker({ url: wrongUrl, env: {} }));
    expect(error).toBeInstanceOf(BrokerConnectionError);
    expect(error.message).toContain("ACCESS_REFUSED");
    expect(error.message).toContain(":***@");
    expectNoSecret(errorText(error), "RabbitMQ error");

    // the same through a worker, which must not start
    const app = new Chicory({
      broker: new RabbitMqBroker({ url: wrongUrl, env: {} }),
      backend: null,
      config: { env: {} },
    });
    cleanups.push(() => app.disconnect().catch(() => undefined));
    app.task({ name: "noop" }, async () => null);
    const logger = recordingLogger();
    const worker = new Worker(app, { logger });
    const startError = await worker.start().then(
      () => new Error("worker started with a wrong password"),
      (e: unknown) => e as Error,
    );
    cleanups.push(() => worker.stop(1).catch(() => undefined));
    expect(startError).toBeInstanceOf(BrokerConnectionError);
    expect(startError.message).toContain("ACCESS_REFUSED");
    expectNoSecret(`${errorText(startError)}\n${logger.lines.join("\n")}`, "RabbitMQ worker start");
  });

  it("the CLI worker with a wrong password exits 1 with one line naming ACCESS_REFUSED, password masked", async () => {
    requireBuild();
    const result = await runCli(
      ["worker", "test/fixtures/cli-app.mjs", "-c", "1"],
      cliEnv({
        CHICORY_BROKER_URL: wrongUrl,
        CHICORY_BACKEND_URL: "memory",
        CHICORY_WORKER_LOG_LEVEL: "DEBUG",
      }),
      { timeoutMs: 20_000 },
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("ACCESS_REFUSED");
    expect(result.stderr).toContain(":***@");
    expectNoSecret(`${result.stdout}\n${result.stderr}`, "CLI output (RabbitMQ)");
  });
});

// --- amqps:// certificate verification -------------------------------------------------------
// The shared RabbitMQ has no TLS listener (and must not be reconfigured), so a TLS server of this
// file stands in for it: it completes the TLS handshake with the self-signed certificate and then
// closes the connection. What is checked is the client side: whether Chicory's RabbitMQ broker
// accepts that certificate. (The AMQP handshake after TLS is not reached.)
describe.skipIf(skipTls)("A12 amqps:// certificate verification (a TLS endpoint standing in for RabbitMQ)", () => {
  let server: TlsServer | undefined;
  let handshakes = 0;
  let port = 0;

  beforeAll(async () => {
    server = createTlsServer({ key: readFileSync(keyFile), cert: readFileSync(certFile) }, (socket) => {
      handshakes++;
      socket.end();
    });
    server.on("tlsClientError", () => undefined);
    port = await freePort();
    await new Promise<void>((resolve) => server?.listen(port, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
  });

  const amqps = (host = "localhost") => `amqps://guest:${PASSWORD}@${host}:${port}/`;
  const broker = (url: string, env: EnvMap = {}) =>
    new RabbitMqBroker({ url, env, reconnectDelay: "50ms", publishTimeout: 2 });

  it("refuses the self-signed certificate by default; the handshake never completes", async () => {
    const before = handshakes;
    const error = await connectError(broker(amqps()));
    expect(error).toBeInstanceOf(BrokerConnectionError);
    expect(errorText(error)).toMatch(/self[- ]signed certificate|DEPTH_ZERO_SELF_SIGNED_CERT/);
    expect(handshakes).toBe(before);
    expectNoSecret(errorText(error), "amqps error");
  });

  it("trusts the CA of CHICORY_BROKER_RABBITMQ_TLS_CA (handshake completes) and still checks the host name", async () => {
    const env = { CHICORY_BROKER_RABBITMQ_TLS_CA: certFile };
    const before = handshakes;
    const error = await connectError(broker(amqps(), env));
    // TLS succeeded; the stand-in then closed the connection instead of speaking AMQP.
    expect(handshakes).toBeGreaterThan(before);
    expect(errorText(error)).not.toMatch(/self[- ]signed|certificate/i);
    // the certificate names DNS:localhost only: 127.0.0.1 is refused even with the CA
    const atIp = handshakes;
    const hostError = await connectError(broker(amqps("127.0.0.1"), env));
    expect(errorText(hostError)).toMatch(/altnames|ERR_TLS_CERT_ALTNAME_INVALID|Hostname\/IP/);
    expect(handshakes).toBe(atIp);
  });

  it("verification is off only with CHICORY_BROKER_RABBITMQ_TLS_REJECT_UNAUTHORIZED=false, and that warns", async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    cleanups.push(() => process.off("warning", onWarning));
    const before = handshakes;
    await connectError(broker(amqps(), { CHICORY_BROKER_RABBITMQ_TLS_REJECT_UNAUTHORIZED: "false" }));
    expect(handshakes).toBeGreaterThan(before);
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
    const ours = warnings.filter((w) => (w as { code?: string }).code === "CHICORY_TLS_UNVERIFIED");
    expect(ours.map((w) => w.message).join("\n")).toMatch(
      /RabbitMQ .*connection: TLS certificate verification is disabled/,
    );
    expectNoSecret(ours.map((w) => w.message).join("\n"), "warning");
  });

  it("TLS settings with a plain amqp:// URL are a configuration error, not silently ignored", () => {
    expect(() =>
      broker(`amqp://guest:${PASSWORD}@localhost:${port}/`, { CHICORY_BROKER_RABBITMQ_TLS_CA: certFile }),
    ).toThrow(ConfigurationError);
  });
});
