/**
 * `get()` without a timeout while a SQL backend's database is unreachable (PostgreSQL,
 * MariaDB): it still waits, and resolves once the database answers and the record is there,
 * but the outage is no longer silent. A backend given a logger gets one warning naming it
 * (password masked) and the reason, for a hundred waiting `get()`s and every failed poll, and
 * one info line when results can be read again; a backend built from a URL (no logger) gives
 * one process warning. The outage is a TCP proxy of the test's own in front of the shared
 * server, refusing connections and resetting the open ones; the records are written around it.
 */
import { describe, expect, it } from "vitest";
import type { SqlBackend } from "../../../src/backends/sql/sql-backend.js";
import type { Logger } from "../../../src/core/logger.js";
import { settlesWithin } from "../../../src/core/sleep.js";
import { createBackend } from "../../../src/drivers.js";
import {
  AsyncResult,
  BackendConnectionError,
  BrokerConnectionError,
  Chicory,
  DbPoolExhaustedError,
  MemoryBroker,
} from "../../../src/index.js";
import {
  MysqlBackend,
  type MysqlBackendOptions,
  PostgresBackend,
  type PostgresBackendOptions,
} from "../../../src/sql.js";
import { successRecord } from "../../contract/contract-helpers.js";
import { capturingLogger } from "../../helpers/capturing-logger.js";
import { deferred } from "../../helpers/deferred.js";
import { SERVICES, skipUnless } from "../../helpers/services.js";
import { OutageProxy } from "./sql-outage-proxy.js";
import { dropMysqlTables, dropPgTables, freshPrefix } from "./sql-test-helpers.js";

const skipPg = await skipUnless("postgres");
const skipMysql = await skipUnless("mysql");

/**
 * The backends' queryTimeout where the database stalls: long enough for the schema's DDL at
 * connect() on a loaded machine (MariaDB's took over 0.5 s with the suite running).
 */
const QUERY_TIMEOUT = "2s";

/** Longest wait for the warning (it comes 5 s into the outage): the test fails, not times out. */
const WARNING_DEADLINE_MS = 15_000;

/** Resolves with the first process warning of `code` whose message contains `text`. */
function processWarning(code: string, text: string): { warning: Promise<Error>; stop(): void } {
  let stop = (): void => undefined;
  const warning = new Promise<Error>((resolve) => {
    const listener = (w: Error & { code?: string }) => {
      if (w.code !== code || !w.message.includes(text)) return;
      stop();
      resolve(w);
    };
    process.on("warning", listener);
    stop = () => process.off("warning", listener);
  });
  return { warning, stop };
}

/** `promise`, or a rejection saying what did not happen within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms / 1000} s of the outage`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

interface Case {
  readonly kind: "postgres" | "mysql";
  readonly skip: boolean;
  readonly serviceUrl: string;
  readonly defaultPort: number;
  /** A password in the URL the backends are given (PostgreSQL trusts loopback: it is ignored). */
  readonly password: string | undefined;
  readonly create: (options: { url: string; tablePrefix: string; logger?: Logger }) => SqlBackend;
  /** A backend with exactly these options (no defaults of the test's own). */
  readonly build: (options: PostgresBackendOptions & MysqlBackendOptions) => SqlBackend;
  readonly drop: (prefix: string) => Promise<void>;
}

const CASES: Case[] = [
  {
    kind: "postgres",
    skip: skipPg,
    serviceUrl: SERVICES.postgres,
    defaultPort: 5432,
    password: "s3cret-pw",
    create: (options) => new PostgresBackend({ ...options, env: {}, poolSize: 2, pollInterval: 0.1 }),
    build: (options) => new PostgresBackend(options),
    drop: (prefix) => dropPgTables(prefix),
  },
  {
    kind: "mysql",
    skip: skipMysql,
    serviceUrl: SERVICES.mysql,
    defaultPort: 3306,
    password: undefined, // root has none: a password given would be refused
    create: (options) => new MysqlBackend({ ...options, env: {}, poolSize: 2, pollInterval: 0.1 }),
    build: (options) => new MysqlBackend(options),
    drop: (prefix) => dropMysqlTables(prefix),
  },
];

/**
 * Runs `body` with a proxy of its own in front of `c`'s server (listening) and a fresh table
 * prefix; then forwards again, closes the proxy and drops the tables, whatever happened.
 */
async function withProxy(c: Case, body: (proxy: OutageProxy, prefix: string) => Promise<void>): Promise<void> {
  const proxy = new OutageProxy(c.serviceUrl, c.defaultPort);
  const prefix = freshPrefix();
  try {
    await proxy.up();
    await body(proxy, prefix);
  } finally {
    proxy.thaw();
    await proxy.down();
    await c.drop(prefix);
  }
}

/** Connects `backend`, runs `body`, and disconnects it whatever happened (again, if `body` did). */
async function connected(backend: SqlBackend, body: () => Promise<void>): Promise<void> {
  try {
    await backend.connect();
    await body();
  } finally {
    await backend.disconnect();
  }
}

describe.concurrent("sql backends: get() without a timeout during an outage", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(
      `${c.kind}: warns once while the database is unreachable (logger, or a process warning without one), keeps waiting, and resolves every get() once it answers`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          const closing: Array<() => Promise<void>> = [];
          try {
            const proxied = new URL(proxy.urlFor(c.serviceUrl));
            if (c.password !== undefined) proxied.password = c.password;
            const url = proxied.toString();
            const { logger, lines, until } = capturingLogger();
            const logged = c.create({ url, tablePrefix: prefix, logger });
            closing.push(() => logged.disconnect());
            // built as `new Chicory({ backend: url })` builds it: no logger
            const fromUrl = createBackend(url, {
              env: {
                [`CHICORY_BACKEND_${c.kind.toUpperCase()}_TABLE_PREFIX`]: prefix,
                CHICORY_RESULT_POLL_INTERVAL: "0.1",
              },
            });
            closing.push(() => fromUrl.disconnect());
            const writer = c.create({ url: c.serviceUrl, tablePrefix: prefix });
            closing.push(() => writer.disconnect());
            await Promise.all([logged.connect(), fromUrl.connect(), writer.connect()]);
            expect(logged.displayUrl).toBe(fromUrl.displayUrl);
            if (c.password !== undefined) expect(logged.displayUrl).toContain(":***@");
            // a get() while the database is up (on PostgreSQL, the LISTEN connection is open when it goes)
            await writer.storeResult(successRecord("before", 0));
            expect(await new AsyncResult("before", logged).get()).toBe(0);
            const { warning: fromUrlWarning, stop } = processWarning(
              `CHICORY_${c.kind.toUpperCase()}_BACKEND`,
              `:${proxy.port}/`,
            );
            closing.push(async () => stop());

            await proxy.down();
            const ids = Array.from({ length: 100 }, (_, i) => `down-${i}`);
            let settled = 0;
            const waitAll = (backend: typeof fromUrl) =>
              Promise.all(
                ids.map((id) =>
                  new AsyncResult<number>(id, backend).get().finally(() => {
                    settled++;
                  }),
                ),
              );
            const values = [waitAll(logged), waitAll(fromUrl)];
            for (const v of values) v.catch(() => undefined); // awaited below; a failure before that is the test's
            const warning = await within(until(/results cannot be read/), WARNING_DEADLINE_MS, "no outage warning");
            expect(warning.level).toBe("warn");
            expect(warning.message).toBe(
              `${c.kind} backend ${logged.displayUrl}: results cannot be read (backend unreachable?); waits go on (until their timeout, if any) and resolve once it answers`,
            );
            expect(String(warning.fields.err)).toMatch(/ECONNREFUSED/);
            expect(warning.fields.waitingTaskIds).toBe(ids.length);
            const fromUrlMessage = (await within(fromUrlWarning, WARNING_DEADLINE_MS, "no process warning")).message;
            expect(fromUrlMessage).toContain(`${c.kind} backend ${fromUrl.displayUrl}: results cannot be read`);
            expect(fromUrlMessage).toMatch(/ECONNREFUSED/);
            expect(settled).toBe(0); // still waiting: no rejection

            await proxy.up();
            const recovered = until(/results can be read again/);
            await Promise.all(ids.map((id, i) => writer.storeResult(successRecord(id, i))));
            const expected = ids.map((_, i) => i);
            expect(await Promise.all(values)).toEqual([expected, expected]);
            expect((await recovered).level).toBe("info");
            // one warning for the outage, whatever the number of waits and of failed polls
            expect(lines.filter((line) => line.level === "warn" || line.level === "error")).toEqual([warning]);
            if (c.password !== undefined) {
              const everything = JSON.stringify(lines.map((l) => [l.message, String(l.fields.err)])) + fromUrlMessage;
              expect(everything).not.toContain(c.password);
            }
          } finally {
            for (const close of closing.reverse()) await close();
          }
        }),
    );
  }
});

describe.concurrent("sql backends: a database that stops answering on open connections", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(
      `${c.kind}: an operation fails after queryTimeout with a BackendConnectionError naming it, a healthcheck says so, and both work again once the database answers`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          const url = proxy.urlFor(c.serviceUrl);
          const stalled = c.build({ url, tablePrefix: prefix, env: {}, queryTimeout: QUERY_TIMEOUT, poolSize: 2 });
          await connected(stalled, async () => {
            await stalled.storeResult(successRecord("before", 1));
            proxy.freeze();
            const failure = await stalled.getResult("before").catch((error: unknown) => error);
            expect(failure).toBeInstanceOf(BackendConnectionError);
            expect(String((failure as Error).message)).toMatch(
              new RegExp(
                `^getResult: .* did not answer within 2 s \\(queryTimeout, CHICORY_BACKEND_${c.kind.toUpperCase()}_QUERY_TIMEOUT\\)`,
              ),
            );
            expect(await stalled.healthcheck()).toEqual({
              connected: false,
              error: expect.stringMatching(/^healthcheck: .* did not answer within 2 s \(queryTimeout/),
            });
            proxy.thaw();
            expect((await stalled.getResult("before"))?.result).toBe(1);
          });
        }),
    );
  }
});

/** A backend of `c` through `proxy` (queryTimeout 30 s), whose pool waits `poolTimeout` for a connection. */
function stalledBackend(c: Case, proxy: OutageProxy, prefix: string, poolTimeout = "60s"): SqlBackend {
  return c.build({ url: proxy.urlFor(c.serviceUrl), tablePrefix: prefix, env: {}, queryTimeout: "30s", poolTimeout });
}

describe.concurrent("sql backends: a database that accepts connections but never answers them", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(
      `${c.kind}: connect() fails after poolTimeout with DbPoolExhaustedError, on one connection (not retried)`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          proxy.freeze();
          const backend = stalledBackend(c, proxy, prefix, "1s");
          try {
            const failure = await backend.connect().catch((error: unknown) => error);
            expect(failure).toBeInstanceOf(DbPoolExhaustedError);
            expect(String((failure as Error).message)).toMatch(/did not answer a new connection in time/);
            expect(proxy.accepted).toBe(1);
          } finally {
            await backend.disconnect();
          }
        }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: disconnect() ends an operation waiting for a new connection and closes that connection within its 5 s grace, not at poolTimeout`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          const backend = stalledBackend(c, proxy, prefix);
          await backend.connect();
          // The open connections go (a restart); new ones are accepted but never answered.
          await proxy.down();
          await proxy.up();
          proxy.freeze();
          const accepted = proxy.accepted;
          const waiting = backend.getResult("any").catch((error: unknown) => error);
          await proxy.acceptedCount(accepted + 1);
          expect(await settlesWithin(backend.disconnect(), 10_000)).toBe(true);
          const failure = await waiting;
          expect(failure).toBeInstanceOf(BackendConnectionError);
          expect(String((failure as Error).message)).toMatch(/^getResult: .* was disconnected while it ran/);
          expect(await settlesWithin(proxy.noConnections(), 2_000)).toBe(true);
        }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: disconnect() during connect() ends it within its 5 s grace, not at poolTimeout, and closes its connection`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          proxy.freeze();
          const backend = stalledBackend(c, proxy, prefix);
          const connecting = backend.connect().catch((error: unknown) => error);
          await proxy.acceptedCount(1);
          expect(await settlesWithin(backend.disconnect(), 10_000)).toBe(true);
          const failure = await connecting;
          expect(failure).toBeInstanceOf(BackendConnectionError);
          expect(String((failure as Error).message)).toMatch(/was disconnected while it ran/);
          expect(backend.isOpen).toBe(false);
          expect(await settlesWithin(proxy.noConnections(), 2_000)).toBe(true);
        }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: disconnect() in the same turn as connect() (the driver still loading) ends it before anything is sent`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          proxy.freeze();
          const backend = stalledBackend(c, proxy, prefix);
          const connecting = backend.connect().catch((error: unknown) => error);
          expect(await settlesWithin(backend.disconnect(), 10_000)).toBe(true);
          const failure = await connecting;
          expect(failure).toBeInstanceOf(BackendConnectionError);
          expect(String((failure as Error).message)).toMatch(/^connect: .* was disconnected while it ran/);
          expect(backend.isOpen).toBe(false);
          expect(proxy.accepted).toBe(0);
        }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: app.disconnect() while the broker still connects: the backend is not connected after it`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          proxy.freeze();
          const backend = stalledBackend(c, proxy, prefix);
          const brokerHeld = deferred<void>();
          const broker = new (class extends MemoryBroker {
            override async connect(): Promise<void> {
              await brokerHeld.promise;
              await super.connect();
            }
          })();
          const app = new Chicory({ broker, backend });
          const connecting = app.connect().catch((error: unknown) => error);
          const disconnecting = app.disconnect();
          brokerHeld.resolve();
          expect(await settlesWithin(disconnecting, 10_000)).toBe(true);
          const failure = await connecting;
          expect(failure).toBeInstanceOf(BrokerConnectionError);
          expect(String((failure as Error).message)).toMatch(
            /^connect: app\.disconnect\(\) was called while the app connected its broker/,
          );
          expect(backend.isOpen).toBe(false);
          expect(proxy.accepted).toBe(0);
        }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: app.disconnect() during app.connect() ends the backend's connect too, not at poolTimeout`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          proxy.freeze();
          const backend = stalledBackend(c, proxy, prefix);
          const app = new Chicory({ broker: new MemoryBroker(), backend });
          const connecting = app.connect().catch((error: unknown) => error);
          await proxy.acceptedCount(1);
          expect(await settlesWithin(app.disconnect(), 10_000)).toBe(true);
          const failure = await connecting;
          expect(failure).toBeInstanceOf(BackendConnectionError);
          // the app's words, the backend's own cut as the cause
          expect(String((failure as Error).message)).toMatch(
            /^connect: app\.disconnect\(\) was called while the app connected its backend/,
          );
          expect(String(((failure as Error).cause as Error).message)).toMatch(/was disconnected while it ran/);
          expect(await settlesWithin(proxy.noConnections(), 2_000)).toBe(true);
        }),
    );
  }

  const pgCase = CASES.find((c) => c.kind === "postgres") as Case;
  it.skipIf(pgCase.skip)(
    "postgres: disconnect() ends a LISTEN connection still being opened (a waiter on a database that stopped answering)",
    () =>
      withProxy(pgCase, async (proxy, prefix) => {
        const backend = stalledBackend(pgCase, proxy, prefix);
        await backend.connect();
        proxy.freeze();
        const accepted = proxy.accepted;
        // its LISTEN connection (and, maybe, a pooled one for a poll) waits for an answer
        const waiting = new AsyncResult("never-stored", backend).get({ timeout: 30 }).catch((e: unknown) => e);
        await proxy.acceptedCount(accepted + 1);
        expect(await settlesWithin(backend.disconnect(), 10_000)).toBe(true);
        expect(await settlesWithin(proxy.noConnections(), 2_000)).toBe(true);
        expect(await waiting).toBeInstanceOf(Error);
      }),
  );
});

describe.concurrent("sql backends: connect() right after a disconnect() that cut the connect before it", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(`${c.kind}: the backend connects anew (it joined the cut connect and failed)`, () =>
      withProxy(c, async (proxy, prefix) => {
        const backend = stalledBackend(c, proxy, prefix);
        const first = backend.connect().catch((error: unknown) => error);
        const disconnecting = backend.disconnect();
        const second = backend.connect();
        await disconnecting;
        expect(await first).toBeInstanceOf(BackendConnectionError);
        await second;
        expect(backend.isReady).toBe(true);
        await backend.storeResult(successRecord("after-cut", 3));
        expect((await backend.getResult("after-cut"))?.result).toBe(3);
        await backend.disconnect();
      }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: a connect() waiting for a disconnect() under way fails when another disconnect() comes after it`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          const backend = stalledBackend(c, proxy, prefix);
          const first = backend.connect().catch((error: unknown) => error);
          const firstDisconnect = backend.disconnect();
          const second = backend.connect().catch((error: unknown) => error);
          await backend.disconnect();
          await firstDisconnect;
          expect(await first).toBeInstanceOf(BackendConnectionError);
          const failure = await second;
          expect(failure).toBeInstanceOf(BackendConnectionError);
          expect(String((failure as Error).message)).toMatch(/^connect: .* was disconnected while it ran/);
          // before, it opened a pool after the last disconnect() had resolved
          expect(backend.isOpen).toBe(false);
          expect(await settlesWithin(proxy.noConnections(), 2_000)).toBe(true);
        }),
    );

    it.skipIf(c.skip)(`${c.kind}: app.connect() after an app.disconnect() under way connects both again`, () =>
      withProxy(c, async (proxy, prefix) => {
        const backend = stalledBackend(c, proxy, prefix);
        const app = new Chicory({ broker: new MemoryBroker(), backend });
        const first = app.connect().catch((error: unknown) => error);
        const disconnecting = app.disconnect();
        const second = app.connect();
        await disconnecting;
        await first;
        await second;
        expect(backend.isReady).toBe(true);
        expect(await app.broker.healthcheck()).toMatchObject({ connected: true });
        await app.disconnect();
      }),
    );
  }
});

describe.concurrent("sql backends: operations during an outage", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(`${c.kind}: retried on new connections with one warning, not one per try`, () =>
      withProxy(c, async (proxy, prefix) => {
        const { logger, lines } = capturingLogger();
        const backend = c.create({ url: proxy.urlFor(c.serviceUrl), tablePrefix: prefix, logger });
        await connected(backend, async () => {
          await proxy.down();
          const startedMs = performance.now();
          for (let i = 0; i < 5; i++) {
            expect(await backend.getResult("any").catch((error: unknown) => error)).toBeInstanceOf(Error);
          }
          const elapsedMs = performance.now() - startedMs;
          const retries = lines.filter((line) => /retrying on a new connection/.test(line.message));
          // 5 operations × 5 tries: one line per 10 s at most (on an idle machine the whole run
          // takes ~3 s, so one line; a loaded one may pass 10 s, and a later line then says how
          // many retries it left out)
          expect(retries.length).toBeGreaterThanOrEqual(1);
          expect(retries.length).toBeLessThanOrEqual(1 + Math.floor(elapsedMs / 10_000));
          expect(retries[0]?.fields).toMatchObject({ operation: "getResult", err: expect.any(String) });
          for (const later of retries.slice(1)) {
            expect(later.fields).toMatchObject({ retriesSinceLastWarning: expect.any(Number) });
          }
        });
      }),
    );
  }
});

describe.concurrent("sql backends: a database that refuses connections for a moment", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(`${c.kind}: an operation's retries wait out a refusal of 0.2 s (spaced, not back to back)`, () =>
      withProxy(c, async (proxy, prefix) => {
        const backend = c.create({
          url: proxy.urlFor(c.serviceUrl),
          tablePrefix: prefix,
          logger: capturingLogger().logger,
        });
        await connected(backend, async () => {
          await backend.storeResult(successRecord("kept", 7));
          await proxy.down(); // a restart: the open connections reset, new ones refused
          const back = new Promise((resolve) => setTimeout(resolve, 200)).then(() => proxy.up());
          // tries at 0, 0, 25, 100 and 400 ms after the first failure (± 20 %): the last ones get through
          expect((await backend.getResult("kept"))?.result).toBe(7);
          await back;
        });
      }),
    );
  }
});

describe.concurrent("sql backends: operations that time out waiting for the pool", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(
      `${c.kind}: give back the connection they get once the database answers: one new connection in all, not one each`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          const backend = c.build({
            url: proxy.urlFor(c.serviceUrl),
            tablePrefix: prefix,
            env: {},
            queryTimeout: QUERY_TIMEOUT,
            poolSize: 1,
            maxOverflow: 0,
            poolTimeout: "30s", // the waiting checkouts are still queued when the database answers
          });
          await connected(backend, async () => {
            await backend.storeResult(successRecord("before", 1));
            const acceptedBefore = proxy.accepted;
            proxy.freeze();
            // The first holds the one connection (closed at its timeout); the others wait for it.
            const failures = await Promise.all(
              Array.from({ length: 8 }, () => backend.getResult("before").catch((error: unknown) => error)),
            );
            for (const failure of failures) expect(failure).toBeInstanceOf(BackendConnectionError);
            proxy.thaw();
            expect((await backend.getResult("before"))?.result).toBe(1);
            // One replaces the connection closed at the first timeout (before: one per operation).
            expect(proxy.accepted - acceptedBefore).toBeLessThanOrEqual(2);
          });
        }),
    );
  }
});

describe.concurrent("sql backends: a link that goes silent for good", () => {
  for (const c of CASES) {
    it.skipIf(c.skip)(
      `${c.kind}: the connection of an operation that timed out is closed, the next one works on a new connection, a silent LISTEN connection is replaced, and disconnect() does not wait for the silent ones`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          // One connection at most: the one that goes silent must be given back for the next
          // operation to run at all.
          const { logger, until } = capturingLogger();
          const backend = c.build({
            url: proxy.urlFor(c.serviceUrl),
            tablePrefix: prefix,
            env: {},
            queryTimeout: QUERY_TIMEOUT,
            poolSize: 1,
            maxOverflow: 0,
            poolTimeout: "3s",
            logger,
          });
          await connected(backend, async () => {
            await backend.storeResult(successRecord("before", 1));
            // The LISTEN connection (PostgreSQL) too: a waiter opens it.
            const waiting = new AsyncResult("never-stored", backend).get({ timeout: 30 }).catch((e: unknown) => e);
            if (c.kind === "postgres") await until(/^PostgreSQL LISTEN connection listening$/);
            proxy.silenceOpen();
            const failure = await backend.getResult("before").catch((error: unknown) => error);
            expect(failure).toBeInstanceOf(BackendConnectionError);
            expect(String((failure as Error).message)).toMatch(
              /did not answer within 2 s .* its connection was closed/,
            );
            expect((await backend.getResult("before"))?.result).toBe(1);
            // Its liveness probe (every queryTimeout here) finds the LISTEN connection silent.
            if (c.kind === "postgres") await until(/^PostgreSQL LISTEN connection listens again$/);
            await backend.disconnect();
            await proxy.noConnections();
            expect(proxy.connections).toBe(0);
            expect(await waiting).toBeInstanceOf(Error);
          });
        }),
    );

    it.skipIf(c.skip)(
      `${c.kind}: without queryTimeout, disconnect() closes a silent connection after 5 s, and the operation on it fails as cut off by disconnect(), not retried; one still waiting for the pool ends with it, not at poolTimeout`,
      () =>
        withProxy(c, async (proxy, prefix) => {
          const { logger, lines } = capturingLogger();
          const backend = c.build({
            url: proxy.urlFor(c.serviceUrl),
            tablePrefix: prefix,
            env: {},
            queryTimeout: 0,
            logger,
            poolSize: 1,
            maxOverflow: 0,
            poolTimeout: "60s",
          });
          await backend.connect();
          proxy.silenceOpen();
          const sent = proxy.dropped();
          const inFlight = backend.getResult("any").catch((error: unknown) => error);
          await sent;
          const queued = backend.getResult("other").catch((error: unknown) => error); // the one connection is taken
          await backend.disconnect();
          const failure = await inFlight;
          expect(failure).toBeInstanceOf(BackendConnectionError);
          expect(String((failure as Error).message)).toMatch(/^getResult: .* was disconnected while it ran/);
          expect(await settlesWithin(queued, 1000)).toBe(true);
          expect(String(((await queued) as Error).message)).toMatch(/^getResult: .* was disconnected while it ran/);
          expect(lines.filter((line) => /retrying/.test(line.message))).toEqual([]);
          await proxy.noConnections();
        }),
    );
  }
});
