/**
 * Redis Sentinel: the broker and the backend given ioredis clients that find the primary through
 * sentinels (`client:` option, with `readonlyReconnector()`). Two redis-servers and the
 * sentinels this test starts. A forced failover (`SENTINEL FAILOVER`) promotes the replica and
 * demotes the old primary; a crash (SIGKILL of the primary, three sentinels agreeing) promotes
 * the replica. Either way the worker and the producer carry on against the new primary by
 * themselves. The same forced failover runs with TLS and passwords everywhere (servers and
 * sentinel TLS-only, a certificate made at test time), reached by a `rediss+sentinel://` URL.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it, vi } from "vitest";
import { RedisBackend } from "../../../src/backends/redis/index.js";
import { RedisBroker } from "../../../src/brokers/redis/index.js";
import { settlesWithin } from "../../../src/core/sleep.js";
import { Chicory, ChicoryError, Worker } from "../../../src/index.js";
import { readonlyReconnector } from "../../../src/redis/redis-options.js";
import { eventually } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { useCleanups } from "../../helpers/cleanups.js";
import { skipUnless } from "../../helpers/services.js";
import { freePort, OwnRedis, pingRedis } from "../../reliability/infra/redis-server.js";
import { caughtUp, replicate } from "./replication.js";

const skip = await skipUnless("redis");

const NAME = "chicory";

/**
 * TLS and passwords for every server and sentinel: TLS-only ports, a self-signed certificate for
 * `localhost` and `127.0.0.1` (the address the sentinels give for the servers), `--tls-auth-clients no`.
 */
interface Secure {
  readonly cert: string;
  readonly key: string;
  readonly password: string;
  readonly sentinelPassword: string;
}

/** The TLS arguments of a redis-server (server or sentinel) of the secure setup. */
const tlsArgs = (secure: Secure) => [
  ...["--tls-cert-file", secure.cert, "--tls-key-file", secure.key, "--tls-ca-cert-file", secure.cert],
  ...["--tls-auth-clients", "no", "--tls-replication", "yes"],
];

/** How a test client reaches a server or sentinel of the setup (TLS and its password when secure). */
const reach = (secure: Secure | undefined, password?: string) =>
  secure === undefined ? {} : { tls: { ca: readFileSync(secure.cert) }, password };

/** PING through ioredis (a TLS port does not answer the plain-text ping). */
async function answers(port: number, options: Record<string, unknown>): Promise<boolean> {
  const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => null, ...options });
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** A redis-server of the secure setup: TLS only, with a password. */
async function startSecureServer(dir: string, secure: Secure): Promise<{ port: number; kill(): Promise<void> }> {
  const port = await freePort();
  const child = spawn(
    "redis-server",
    [
      ...["--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--dir", dir],
      ...["--save", "", "--appendonly", "no", "--requirepass", secure.password, "--masterauth", secure.password],
      ...tlsArgs(secure),
    ],
    { stdio: "ignore" },
  );
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`TLS redis-server exited with ${child.exitCode}`);
    return answers(port, reach(secure, secure.password));
  }, 10_000);
  return {
    port,
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** `redis-server --sentinel` monitoring `127.0.0.1:<primaryPort>` as {@link NAME}. */
async function startSentinel(
  dir: string,
  primaryPort: number,
  quorum: number,
  secure: Secure | undefined,
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const own = mkdtempSync(join(dir, "sentinel-"));
  const conf = join(own, "sentinel.conf");
  const lines = [
    ...(secure === undefined ? [`port ${port}`] : ["port 0", `tls-port ${port}`]),
    "bind 127.0.0.1",
    `dir ${own}`,
    `sentinel monitor ${NAME} 127.0.0.1 ${primaryPort} ${quorum}`,
    `sentinel down-after-milliseconds ${NAME} 1000`,
    `sentinel failover-timeout ${NAME} 5000`,
  ];
  if (secure !== undefined) {
    lines.push(
      `requirepass ${secure.sentinelPassword}`,
      `sentinel auth-pass ${NAME} ${secure.password}`,
      `sentinel sentinel-pass ${secure.sentinelPassword}`,
    );
  }
  writeFileSync(conf, `${lines.join("\n")}\n`);
  const child = spawn("redis-server", [conf, "--sentinel", ...(secure === undefined ? [] : tlsArgs(secure))], {
    stdio: "ignore",
  });
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`redis-sentinel exited with ${child.exitCode}`);
    return secure === undefined ? pingRedis(port) : answers(port, reach(secure, secure.sentinelPassword));
  }, 10_000);
  return { port, child };
}

const role = async (admin: Redis) => String(((await admin.call("ROLE")) as unknown[])[0]);
const count = async (admin: Redis, ...command: string[]) =>
  ((await admin.call(...(command as [string]))) as unknown[]).length;

describe.skipIf(skip)("redis adapters: Sentinel", () => {
  const cleanups = useCleanups();
  const dir = mkdtempSync(join(tmpdir(), "chicory-sentinel-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * A primary A, its replica B, `sentinels` sentinels (quorum: a majority), and an app whose
   * broker and backend reach the primary through them (clients given, or a `redis+sentinel://`
   * URL; `secure`: TLS and passwords, a `rediss+sentinel://` URL), with a worker started.
   */
  async function setup(sentinels: number, form: "client" | "url", secure?: Secure) {
    const server = async (name: string) => {
      const own = mkdtempSync(join(dir, `${name}-`));
      if (secure !== undefined) return startSecureServer(own, secure);
      const plain = new OwnRedis(await freePort(), own, "none");
      await plain.start();
      return plain;
    };
    const a = await server("a");
    cleanups.push(() => a.kill());
    const b = await server("b");
    cleanups.push(() => b.kill());
    const adminA = new Redis(a.port, "127.0.0.1", { maxRetriesPerRequest: 1, ...reach(secure, secure?.password) });
    const adminB = new Redis(b.port, "127.0.0.1", reach(secure, secure?.password));
    adminA.on("error", () => {}); // A may be killed
    cleanups.push(() => {
      adminA.disconnect();
      adminB.disconnect();
    });
    await replicate(adminB, a.port);
    const started: { port: number; child: ChildProcess }[] = [];
    for (let i = 0; i < sentinels; i++) {
      started.push(await startSentinel(dir, a.port, Math.floor(sentinels / 2) + 1, secure));
    }
    const sentinel = new Redis(
      (started[0] as { port: number }).port,
      "127.0.0.1",
      reach(secure, secure?.sentinelPassword),
    );
    cleanups.push(() => {
      sentinel.disconnect();
      for (const s of started) s.child.kill("SIGKILL");
    });
    // the sentinels have found the replica and each other (they can fail over)
    await eventually(async () => (await count(sentinel, "SENTINEL", "replicas", NAME)) === 1, 15_000, 100);
    await eventually(async () => (await count(sentinel, "SENTINEL", "sentinels", NAME)) === sentinels - 1, 15_000, 100);

    const viaSentinel = () => {
      const client = new Redis({
        sentinels: started.map((s) => ({ host: "127.0.0.1", port: s.port })),
        name: NAME,
        reconnectOnError: readonlyReconnector(),
      });
      // the owner's listener (connections drop when the primary goes away or is demoted)
      client.on("error", () => {});
      cleanups.push(() => client.disconnect());
      return client;
    };
    // (secure: the sentinels by the name their certificate gives, the primary's password in the URL)
    const url =
      secure === undefined
        ? `redis+sentinel://${started.map((s) => `127.0.0.1:${s.port}`).join(",")}/${NAME}`
        : `rediss+sentinel://:${secure.password}@${started.map((s) => `localhost:${s.port}`).join(",")}/${NAME}`;
    const via = () => (form === "url" ? { url } : { client: viaSentinel() });
    // secure: the app's URL and the broker's variables only (the default backend shares them)
    const app =
      secure === undefined
        ? new Chicory({
            broker: new RedisBroker({ ...via(), keyPrefix: "sentinel", blockMs: 200, env: {} }),
            backend: new RedisBackend({ ...via(), keyPrefix: "sentinel", env: {} }),
          })
        : new Chicory({
            broker: url,
            config: {
              env: {
                CHICORY_BROKER_REDIS_TLS_CA: secure.cert,
                CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: secure.sentinelPassword,
                CHICORY_BROKER_REDIS_KEY_PREFIX: "sentinel",
                CHICORY_BROKER_REDIS_BLOCK_MS: "200",
              },
            },
          });
    const broker = app.broker as RedisBroker;
    const backend = app.backend as RedisBackend;
    const double = app.task(async function double(n: number) {
      return n * 2;
    });
    const log = capturingLogger();
    const worker = new Worker(app, { logger: log.logger, concurrency: 4, heartbeatInterval: 0.2 });
    await worker.start();
    cleanups.push(() => worker.stop(5));
    const run = async (from: number, n: number) =>
      Promise.all(Array.from({ length: n }, async (_, i) => (await double.delay(from + i)).get({ timeout: 30 })));
    return { a, b, adminA, adminB, sentinel, started, url, broker, backend, double, run, log };
  }

  /** Every entry of B's stream acknowledged and deleted, none pending, the worker's heartbeat there. */
  async function settledOn(adminB: Redis): Promise<void> {
    // (a result can be announced just before its entry's ack reaches Redis)
    await eventually(async () => Number(await adminB.call("XLEN", "sentinel:stream:{default}")) === 0, 5000);
    expect(await adminB.call("XPENDING", "sentinel:stream:{default}", "chicory-workers")).toEqual([
      0,
      null,
      null,
      null,
    ]);
    await eventually(async () => Number(await adminB.call("ZCARD", "sentinel:workers")) === 1, 5000);
  }

  /**
   * Forces a failover and waits for the old primary's demotion; then jobs run, and B's stream ends
   * empty (the worker and the producer moved to B by themselves).
   */
  async function failOverAndCarryOn(s: Awaited<ReturnType<typeof setup>>): Promise<void> {
    await caughtUp(s.adminA, s.adminB);
    // (NOGOODSLAVE until the sentinel has its own fresh view of the replica)
    await eventually(async () => (await s.sentinel.call("SENTINEL", "FAILOVER", NAME)) === "OK", 20_000, 200);
    await eventually(async () => {
      const [, port] = (await s.sentinel.call("SENTINEL", "get-master-addr-by-name", NAME)) as string[];
      return Number(port) === s.b.port;
    }, 20_000);
    // the old primary is a replica now, and the sentinel closed its clients' connections
    await eventually(async () => (await role(s.adminA)) === "slave", 20_000);
    expect(await role(s.adminB)).toBe("master");

    expect(await s.run(0, 20)).toEqual(Array.from({ length: 20 }, (_, i) => i * 2));
    await settledOn(s.adminB);
  }

  it("workers and producers carry on after a forced failover and the old primary's demotion", {
    timeout: 60_000,
  }, async () => {
    const s = await setup(1, "client");
    // two clients of the same sentinels' primary: a result and its entry's ack are one script call
    expect(s.broker.attachResults(s.backend)).toBe(true);
    expect(await s.run(0, 1)).toEqual([0]);
    await failOverAndCarryOn(s);
  });

  it("TLS and passwords on the servers and the sentinel (rediss+sentinel://): refusals name the setting; a failover carries on", {
    timeout: 60_000,
  }, async () => {
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"],
        ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
      ],
      { stdio: "ignore" },
    );
    const secure: Secure = { cert, key, password: "PrimaryCanary7x", sentinelPassword: "SentinelCanary3z" };
    const s = await setup(1, "url", secure);
    // the default backend took the broker's TLS and sentinel settings: it reached the same primary
    expect(s.broker.attachResults(s.backend)).toBe(true);
    expect(await s.run(0, 5)).toEqual([0, 2, 4, 6, 8]);

    const WRONG = "WrongCanary9q";
    const refusal = async (url: string, env: Record<string, string>) => {
      const broker = new RedisBroker({ url, env });
      cleanups.push(() => broker.disconnect());
      const error: unknown = await broker.connect().then(
        () => new Error("connected, but it should have been refused"),
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ChicoryError);
      const text = `${inspect(error, { depth: 8 })}\n${(error as Error).stack}`;
      for (const secret of [secure.password, secure.sentinelPassword, WRONG]) expect(text).not.toContain(secret);
      return (error as Error).message;
    };
    const ca = { CHICORY_BROKER_REDIS_TLS_CA: cert };
    const login = { CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: secure.sentinelPassword };
    expect(await refusal(s.url, ca)).toMatch(
      /NOAUTH .*\(the sentinels refused the login: their own user and password are CHICORY_BROKER_REDIS_SENTINEL_USERNAME\/_SENTINEL_PASSWORD/,
    );
    expect(await refusal(s.url, { ...ca, CHICORY_BROKER_REDIS_SENTINEL_PASSWORD: WRONG })).toMatch(
      /WRONGPASS .*\(the sentinels refused the login/,
    );
    expect(await refusal(s.url, login)).toMatch(
      /no sentinel \(localhost:\d+\) led to the primary "chicory": All sentinels are unreachable\. localhost:\d+: self-signed certificate \(TLS: a sentinel's certificate is not trusted \[DEPTH_ZERO_SELF_SIGNED_CERT\]: give its CA with the tls\.ca option or CHICORY_BROKER_REDIS_TLS_CA\)/,
    );
    expect(await refusal(s.url.replace("rediss+", "redis+"), login)).toMatch(
      /\(a sentinel closed the connection: is TLS on at its port\? sentinels with TLS need rediss\+sentinel:\/\/\)/,
    );
    // the primary's own refusal, after the sentinels named it
    expect(await refusal(s.url.replace(`:${secure.password}@`, `:${WRONG}@`), { ...ca, ...login })).toMatch(
      /cannot connect to rediss\+sentinel:\/\/:\*\*\*@localhost:\d+\/chicory: WRONGPASS .*\(authentication failed/,
    );

    await failOverAndCarryOn(s);
  });

  it("jobs published while the primary is down (SIGKILL) run when three sentinels have promoted the replica (redis+sentinel:// URL)", {
    timeout: 60_000,
  }, async () => {
    const s = await setup(3, "url");
    // a redis+sentinel:// URL: the same primary for both, so results and acks are one script call
    expect(s.broker.attachResults(s.backend)).toBe(true);
    // a name the sentinels do not know: connect fails at once, naming them (no endless wait)
    const unknown = new RedisBroker({ url: s.url.replace(`/${NAME}`, "/nosuch"), env: {} });
    await expect(unknown.connect()).rejects.toThrow(
      /cannot connect to redis\+sentinel:\/\/.*: no sentinel \(127\.0\.0\.1:\d+, .*\) led to the primary "nosuch": the sentinels answered but do not know this name/,
    );
    // a sentinel that accepts connections and never answers, first in the list: the next ones
    // are asked after its 2 s (before, connect() waited for it for good, saying nothing)
    const silent = createServer((socket) => socket.on("error", () => undefined));
    const held: Socket[] = [];
    silent.on("connection", (socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    cleanups.push(async () => {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const silentPort = (silent.address() as AddressInfo).port;
    const past = new RedisBroker({ url: s.url.replace("sentinel://", `sentinel://127.0.0.1:${silentPort},`), env: {} });
    cleanups.push(() => past.disconnect());
    expect(await settlesWithin(past.connect(), 15_000)).toBe(true);
    expect(await s.run(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => i * 2));
    await caughtUp(s.adminA, s.adminB); // what was acknowledged before is on B (replication is asynchronous)

    await s.a.kill("SIGKILL");
    // published from the crash on, through the sentinels' agreement and the promotion
    const during = s.run(100, 50);
    await eventually(
      async () => {
        const [, port] = (await s.sentinel.call("SENTINEL", "get-master-addr-by-name", NAME)) as string[];
        return Number(port) === s.b.port;
      },
      30_000,
      100,
    );
    expect(await during).toEqual(Array.from({ length: 50 }, (_, i) => (100 + i) * 2));
    expect(await s.run(200, 20)).toEqual(Array.from({ length: 20 }, (_, i) => (200 + i) * 2));
    await settledOn(s.adminB);

    // A sentinel down: the connections' failover detectors, reconnecting, cannot reach it.
    // ioredis would print "[ioredis] Unhandled error event" and a stack on stderr for each;
    // the worker's log says it once instead.
    const printed = vi.spyOn(console, "error");
    cleanups.push(() => printed.mockRestore());
    const gone = s.started[2] as { port: number; child: ChildProcess };
    gone.child.kill("SIGKILL");
    await s.adminB.call("CLIENT", "KILL", "TYPE", "normal"); // every connection reconnects
    const goneLine = new RegExp(`sentinel 127\\.0\\.0\\.1:${gone.port} refused or did not answer`);
    const said = await s.log.until(goneLine);
    expect(said.fields).toMatchObject({ sentinel: `127.0.0.1:${gone.port}` });
    expect(await s.run(300, 10)).toEqual(Array.from({ length: 10 }, (_, i) => (300 + i) * 2));
    expect(s.log.lines.filter((line) => goneLine.test(line.message))).toHaveLength(1);
    expect(printed.mock.calls.map((call) => String(call[0]))).not.toContainEqual(
      expect.stringContaining("Unhandled error event"),
    );
  });
});
