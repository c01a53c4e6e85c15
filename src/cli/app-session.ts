/**
 * What the inspection commands share: load the app, connect only the part a command needs
 * (broker or backend) with a one-line, password-free error when it is unreachable, and
 * always disconnect.
 * @module
 */
import type { Chicory } from "../app.js";
import type { Backend } from "../backends/backend.js";
import { type LoadedApp, loadApp } from "./load-app.js";
import { CliFailure, CliUsageError } from "./output.js";

/** The failure line: the adapter's own message when it already names the location, else prefixed. */
function connectFailure(what: string, displayUrl: string, error: unknown): CliFailure {
  const reason = error instanceof Error ? error.message : String(error);
  const message = reason.includes(displayUrl) ? reason : `cannot connect to ${what} ${displayUrl}: ${reason}`;
  return new CliFailure(message, { cause: error });
}

/**
 * Refuses a broker that lives in this process only (`memory://`, `sqlite::memory:`): what this
 * command would publish, list or purge there is not what any other process sees, and a job
 * enqueued there is gone when the command exits. A usage error (exit 2).
 */
function assertSharedBroker(app: Chicory): void {
  if (app.broker.capabilities.multiProcess) return;
  throw new CliUsageError(
    `the app's broker (${app.broker.displayUrl}) lives in this process only: what this command enqueues, lists or purges there no other process sees (an enqueued job is gone when the command exits); give the app a broker processes share (a SQLite file, Redis or RabbitMQ: CHICORY_BROKER_URL)`,
  );
}

/** Connects the app's broker; an unreachable broker becomes a one-line failure (exit 1). */
export async function connectBroker(app: Chicory): Promise<void> {
  assertSharedBroker(app);
  try {
    await app.connectBroker();
  } catch (error) {
    throw connectFailure("broker", app.broker.displayUrl, error);
  }
}

/**
 * Connects the broker, then the whole app (its backend too, when it has one), as a DLQ replay
 * needs: it clears the replayed task's stored failure. Failures become one-line failures.
 */
export async function connectApp(app: Chicory): Promise<void> {
  await connectBroker(app);
  try {
    await app.connect();
  } catch (error) {
    throw connectFailure("backend", app.backend?.displayUrl ?? "", error);
  }
}

/** The app's backend, connected; a failure (or no backend) becomes a one-line failure. */
export async function connectBackend(app: Chicory, purpose: string): Promise<Backend> {
  const backend = app.backend;
  if (!backend) {
    // the app's configuration, not a runtime failure: a usage error (exit 2), as docs/cli.md says
    throw new CliUsageError(
      `${purpose} needs a result backend, and this app has none (set backend or CHICORY_BACKEND_URL)`,
    );
  }
  if (backend.multiProcess === false) {
    throw new CliUsageError(
      `${purpose} needs a result backend other processes share, and this app's (${backend.displayUrl}) lives in this process only (set backend or CHICORY_BACKEND_URL)`,
    );
  }
  try {
    await backend.connect();
  } catch (error) {
    throw connectFailure("backend", backend.displayUrl, error);
  }
  return backend;
}

/** The queues a command covers: `--queue` values, else the worker's queues plus every task's queue. */
export function targetQueues(app: Chicory, queues: readonly string[] | undefined): string[] {
  if (queues && queues.length > 0) return [...new Set(queues)];
  const all = new Set<string>(app.config.worker.queues);
  for (const task of app.tasks.values()) all.add(task.queue);
  return [...all];
}

/** Loads the app of `spec`, runs `fn`, and disconnects whatever was connected. */
export async function withApp<T>(spec: string, fn: (loaded: LoadedApp) => Promise<T>): Promise<T> {
  const loaded = await loadApp(spec);
  try {
    return await fn(loaded);
  } finally {
    await loaded.app.disconnect().catch(() => undefined);
  }
}
