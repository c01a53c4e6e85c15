/**
 * Shared pieces of the hostile-input and security suite (RELIABILITY §2.10): a logger that
 * records every line, a memory-broker app with a canary task, raw hostile bodies, and a
 * polling helper.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Chicory, type Logger, MemoryBackend, MemoryBroker, Worker, type WorkerInit } from "../../src/index.js";

/** A logger that keeps every line (fields and message) as JSON text. */
export interface RecordingLogger extends Logger {
  /** Every line logged so far, serialized. */
  readonly lines: string[];
}

/** Creates a {@link RecordingLogger}; children share the same `lines`. */
export function recordingLogger(lines: string[] = [], bound: Record<string, unknown> = {}): RecordingLogger {
  const log =
    (level: string) =>
    (fieldsOrMessage: Record<string, unknown> | string, message?: string): void => {
      const fields = typeof fieldsOrMessage === "string" ? {} : fieldsOrMessage;
      const msg = typeof fieldsOrMessage === "string" ? fieldsOrMessage : (message ?? "");
      lines.push(JSON.stringify({ level, ...bound, ...serializable(fields), msg }));
    };
  return {
    lines,
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (fields) => recordingLogger(lines, { ...bound, ...fields }),
  };
}

/** Errors become `{ name, message, stack, cause }` so that they show up in the recorded line. */
function serializable(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    out[key] =
      value instanceof Error
        ? { name: value.name, message: value.message, stack: value.stack, cause: String(value.cause) }
        : value;
  }
  return out;
}

/** Polls `fn` until it returns a truthy value (or throws after `timeoutMs`). */
export async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 5000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms (last error: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A temporary directory holding the canary file that a successful attack would create. */
export interface Canary {
  /** Path a payload would create (it must never exist). */
  readonly path: string;
  /** True when the canary file exists (the attack ran). */
  fired(): boolean;
  remove(): void;
}

/** Creates a fresh canary location. */
export function canary(): Canary {
  const dir = mkdtempSync(join(tmpdir(), "chicory-canary-"));
  const path = join(dir, "pwned");
  return {
    path,
    fired: () => existsSync(path),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Hostile raw bodies for A1/A2, each of which would create `canaryPath` if the worker ran
 * it as code. Keys are labels used in assertions.
 */
export function hostileBodies(canaryPath: string, id: string): Record<string, string | Buffer> {
  const cmd = `touch ${canaryPath}`;
  // Protocol-4 pickle of os.system(cmd): PROTO 4, GLOBAL "os system", the argument, REDUCE, STOP.
  const pickle = Buffer.concat([
    Buffer.from([0x80, 0x04, 0x95, 0x20, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from(`cos\nsystem\n(V${cmd}\ntR.`, "latin1"),
  ]);
  // A Chicory (Python) TaskMessage pickled with protocol 2 (class reference + dict), plus a reducer.
  const chicoryPickle = Buffer.from(
    `\x80\x02cchicory.types\nTaskMessage\nq\x00)\x81q\x01}q\x02(X\x02\x00\x00\x00idq\x03X\x04\x00\x00\x00${id.slice(0, 4)}q\x04ubcposix\nsystem\n(V${cmd}\ntR.`,
    "latin1",
  );
  const fn = `function(){require('child_process').execSync('${cmd}')}`;
  const base = { v: 1, id, name: "probe", args: [], retries: 0, eta: null, priority: null, firstFailureAt: null };
  return {
    pickle,
    chicoryPickle,
    yamlJsFunction: `!!js/function '${fn}'`,
    yamlPythonObject: `!!python/object/apply:os.system ["${cmd}"]`,
    typeFunction: JSON.stringify({ $type: "Function", body: fn }),
    classField: JSON.stringify({ __class__: "subprocess.Popen", args: [cmd] }),
    typeFunctionInArgs: JSON.stringify({ ...base, args: [{ $type: "Function", body: fn }], lastError: null }),
    classInArgs: JSON.stringify({
      ...base,
      args: [{ __class__: "os.system", __reduce__: [cmd] }, { "@class": "java.lang.Runtime" }],
      lastError: null,
    }),
    classAsName: JSON.stringify({ ...base, name: "__class__", lastError: null }),
    revivalInLastError: JSON.stringify({ ...base, name: "eval", lastError: `eval(${fn})` }),
    empty: "",
    nulBytes: "\u0000\u0000\u0000",
  };
}

/** A memory-broker app with a recording logger, a canary-writing `probe` and an `ok` task. */
export function memoryApp(config: { signingKey?: string | null; maxMessageBytes?: number } = {}) {
  const broker = new MemoryBroker({ claimMinIdleMs: 60_000 });
  const backend = new MemoryBackend();
  const app = new Chicory({ broker, backend, config: { env: {}, ...config } });
  const ran: unknown[][] = [];
  const probe = app.task({ name: "probe" }, async (...args: unknown[]) => {
    ran.push(args);
    return { protoKeys: Object.getOwnPropertyNames(Object.prototype).length, polluted: pollutedNow() };
  });
  const ok = app.task({ name: "ok" }, async (n: number) => n * 2);
  return { app, broker, backend, probe, ok, ran };
}

/** Starts an in-process worker with DLQ on and a recording logger. */
export async function startWorker(app: Chicory, options: WorkerInit = {}): Promise<Worker> {
  const worker = new Worker(app, { concurrency: 4, useDeadLetterQueue: true, logger: recordingLogger(), ...options });
  await worker.start();
  return worker;
}

/** Names of `Object.prototype`'s own properties (sorted), for before/after comparison. */
export function prototypeSnapshot(): string[] {
  return [
    ...Object.getOwnPropertyNames(Object.prototype),
    ...Object.getOwnPropertySymbols(Object.prototype).map(String),
  ].sort();
}

/** True when a fresh object sees a polluted property. */
export function pollutedNow(): boolean {
  const probe = {} as Record<string, unknown>;
  return probe.polluted !== undefined || probe.isAdmin !== undefined || probe.toString !== Object.prototype.toString;
}

/** A valid message body (unsigned) for `name` with `args`. */
export function messageBody(id: string, name: string, args: unknown[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    v: 1,
    id,
    name,
    args,
    retries: 0,
    eta: null,
    priority: null,
    firstFailureAt: null,
    lastError: null,
    ...extra,
  });
}
