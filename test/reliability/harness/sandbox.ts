/**
 * One test's isolated world: a temp dir (ledgers, logs, the SQLite file), the broker/backend
 * environment of its worker processes (SQLite file in the temp dir; Redis under a random key
 * prefix; or RabbitMQ queues under a random prefix with a Redis backend under the same prefix),
 * an in-process app (built from src/) for producing and reading the books, and the child
 * processes. `close()` kills every child by PID, disconnects, deletes the Redis keys and the
 * RabbitMQ queues, and removes the temp dir.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Chicory } from "../../../src/index.js";
import type { Task } from "../../../src/task.js";
import { SERVICES, uniqueName } from "../../helpers/services.js";
import { deletePrefix } from "../../integration/redis/redis-test-keys.js";
import { ProcessGroup, requireBuild } from "./processes.js";
import { deleteRabbitQueues } from "./rabbitmq.js";

/** Broker kinds the crash tests run on. */
export type BrokerKind = "sqlite" | "redis" | "rabbitmq";

/** Options of {@link openSandbox}. */
export interface SandboxOptions {
  readonly broker: BrokerKind;
  /**
   * Lease length in ms (CHICORY_BROKER_*_CLAIM_MIN_IDLE_MS), default 1000. Not used by RabbitMQ:
   * the server requeues a dead consumer's unacknowledged messages when its connection drops.
   */
  readonly claimMinIdleMs?: number;
  /** Extra variables for the worker processes and the in-process app. */
  readonly env?: Record<string, string>;
}

/** See module doc. */
export interface Sandbox {
  readonly broker: BrokerKind;
  readonly dir: string;
  readonly ledgerDir: string;
  /** Environment of worker processes (and of the in-process app). */
  readonly env: Record<string, string>;
  /** SQLite file (sqlite only). */
  readonly dbPath: string | undefined;
  /** Redis key prefix (redis; rabbitmq: also the queue-name prefix and the backend's key prefix). */
  readonly prefix: string | undefined;
  readonly processes: ProcessGroup;
  /** In-process app from src/ on the same broker and backend (producer and books reader). */
  readonly app: Chicory;
  /** The at-least-once `work(ms)` task (its handler never runs in the test process). */
  readonly work: Task<[number], number>;
  /** The at-most-once twin. */
  readonly workAmo: Task<[number], number>;
  /** Kills children, disconnects, deletes keys and files. Never throws. */
  close(): Promise<void>;
}

/** Creates a sandbox (see module doc). */
export function openSandbox(options: SandboxOptions): Sandbox {
  requireBuild();
  const dir = mkdtempSync(join(tmpdir(), "chicory-rel-"));
  const ledgerDir = join(dir, "ledger");
  const logDir = join(dir, "logs");
  mkdirSync(ledgerDir);
  mkdirSync(logDir);
  const claim = String(options.claimMinIdleMs ?? 1000);
  let env: Record<string, string>;
  let dbPath: string | undefined;
  let prefix: string | undefined;
  if (options.broker === "sqlite") {
    dbPath = join(dir, "queue.db");
    env = {
      CHICORY_BROKER_URL: `sqlite:${dbPath}`,
      CHICORY_BACKEND_URL: `sqlite:${dbPath}`,
      CHICORY_BROKER_SQLITE_CLAIM_MIN_IDLE_MS: claim,
    };
  } else if (options.broker === "rabbitmq") {
    prefix = uniqueName("chrel");
    env = {
      CHICORY_BROKER_URL: SERVICES.rabbitmq,
      CHICORY_BROKER_RABBITMQ_PREFIX: prefix,
      CHICORY_BACKEND_URL: SERVICES.redis,
      CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
    };
  } else {
    prefix = uniqueName("chrel");
    env = {
      CHICORY_BROKER_URL: SERVICES.redis,
      CHICORY_BACKEND_URL: SERVICES.redis,
      CHICORY_BROKER_REDIS_KEY_PREFIX: prefix,
      CHICORY_BACKEND_REDIS_KEY_PREFIX: prefix,
      CHICORY_BROKER_REDIS_CLAIM_MIN_IDLE_MS: claim,
    };
  }
  env = { ...env, CHICORY_TEST_LEDGER_DIR: ledgerDir, ...options.env };
  const app = new Chicory({ config: { env: { ...env } } });
  const handler = async (_ms: number): Promise<number> => {
    throw new Error("the test process never runs tasks");
  };
  const work = app.task({ name: "work", deliveryMode: "at_least_once" }, handler);
  const workAmo = app.task({ name: "work_amo", deliveryMode: "at_most_once" }, handler);
  const processes = new ProcessGroup(logDir);
  const keep = process.env.CHICORY_RELIABILITY_KEEP === "1";
  return {
    broker: options.broker,
    dir,
    ledgerDir,
    env,
    dbPath,
    prefix,
    processes,
    app,
    work,
    workAmo,
    async close() {
      await processes.killAll().catch(() => undefined);
      await app.disconnect().catch(() => undefined);
      if (prefix) await deletePrefix(prefix).catch(() => undefined);
      if (prefix && options.broker === "rabbitmq") await deleteRabbitQueues(prefix).catch(() => undefined);
      if (keep) console.log(`[reliability] kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    },
  };
}
