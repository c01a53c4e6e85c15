/**
 * The little of ioredis that Chicory's Redis broker and backend use, as a local structural
 * type, plus the lazy loader. `ioredis` is imported only when a Redis adapter connects.
 * @module
 */
import { createHash } from "node:crypto";
import { DriverNotInstalledError } from "../errors.js";

/** An argument of a Redis command. */
export type RedisArg = string | number | Buffer;

/** A Lua script registered with `defineCommand`, called as `client[name](...keys, ...args)`. */
export type RedisScriptFn = (...args: RedisArg[]) => Promise<unknown>;

/** The subset of an ioredis client (v5/v6) used by Chicory. */
export interface RedisClientLike {
  /** `"wait" | "connecting" | "connect" | "ready" | "reconnecting" | "close" | "end"`. */
  readonly status: string;
  /** Sends any command (goes through auto-pipelining when enabled). */
  call(command: string, ...args: RedisArg[]): Promise<unknown>;
  /** As {@link RedisClientLike.call}, with the reply's strings as Buffers (bytes as Redis holds them). */
  callBuffer?(command: string, ...args: RedisArg[]): Promise<unknown>;
  /**
   * Registers a Lua script as a method that runs with EVALSHA (EVAL fallback on NOSCRIPT).
   * Without `numberOfKeys`, the method takes the number of keys as its first argument.
   */
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number }): void;
  /**
   * A new client with the same options (plus `override`). A `Cluster` takes startup nodes
   * first (an array) and its options second: Chicory calls it that way for a Cluster.
   */
  duplicate(override?: Record<string, unknown> | readonly unknown[]): RedisClientLike;
  /** Connects (with `lazyConnect`). */
  connect(): Promise<void>;
  /** Closes after pending replies. */
  quit(): Promise<unknown>;
  /** Closes at once. */
  disconnect(reconnect?: boolean): void;
  /** Subscribes to channels (the client enters subscriber mode). */
  subscribe(...channels: string[]): Promise<unknown>;
  /** Listens for messages of the subscribed channels. */
  on(event: "message", listener: (channel: string, message: string) => void): unknown;
  /** Listens for connection and command errors. */
  on(event: "error", listener: (error: Error) => void): unknown;
  /** Listens for connection changes: ready (again), closed, ended for good, reconnecting. */
  on(event: "ready" | "close" | "end" | "reconnecting", listener: () => void): unknown;
  /** Removes a listener added with `on`. */
  off(event: "ready" | "close" | "end", listener: () => void): unknown;
}

/** Constructor of an ioredis client. */
type RedisConstructor = new (options: Record<string, unknown>) => RedisClientLike;

let loaded: Promise<RedisConstructor> | undefined;

/**
 * Imports `ioredis` once.
 * @throws DriverNotInstalledError when the package is missing
 */
export function loadRedis(what: string): Promise<RedisConstructor> {
  loaded ??= import("ioredis").then(
    (mod) => ((mod as { Redis?: unknown }).Redis ?? (mod as { default: unknown }).default) as RedisConstructor,
  );
  return loaded.catch((error: unknown) => {
    loaded = undefined;
    throw new DriverNotInstalledError("ioredis@6", what, { cause: error });
  });
}

/** Runs a script registered with {@link RedisClientLike.defineCommand}. */
export function runScript(client: RedisClientLike, name: string, keys: readonly string[], args: readonly RedisArg[]) {
  const fn = (client as unknown as Record<string, RedisScriptFn | undefined>)[name];
  if (fn === undefined) throw new Error(`Redis script "${name}" is not defined on this client`);
  return fn.call(client, ...keys, ...args);
}

/** True when a Redis error means the consumer group (or its stream) is missing. */
export function isNoGroupError(error: unknown): boolean {
  // (Redis 7.0 ends a read blocked on a stream that was deleted with "UNBLOCKED the stream key
  // no longer exists")
  return error instanceof Error && /NOGROUP|no such key|stream key no longer exists/i.test(error.message);
}

/**
 * Whether `error` is Redis's own answer to a command (`OOM`, `READONLY`, `WRONGTYPE`, a script's
 * error): the command reached the server and was refused, its outcome is not unknown.
 */
export function isReplyError(error: unknown): boolean {
  return error instanceof Error && error.name === "ReplyError";
}

/**
 * Whether `error` is Redis refusing a command before it wrote anything: out of memory (`OOM`),
 * a read-only replica (`READONLY`), too few replicas (`NOREPLICAS`), a failed save
 * (`MISCONF`), a stale or loading replica (`MASTERDOWN`, `LOADING`), a script running (`BUSY`).
 * Redis checks these before the command runs, or at a script's first write (a script that has
 * written goes on), so a script refused so wrote nothing. Other reply errors (`WRONGTYPE`, a
 * script's own error) may come after a script's first writes.
 */
export function isRefusedUnapplied(error: unknown): boolean {
  return (
    isReplyError(error) &&
    /^(?:OOM|READONLY|NOREPLICAS|MISCONF|MASTERDOWN|LOADING|BUSY)\b/.test((error as Error).message)
  );
}

/**
 * True when Redis ended a blocked read because its stream's key is gone from the node: deleted,
 * or moved to another node by a Cluster slot migration (the group moves with it).
 */
export function isUnblockedError(error: unknown): boolean {
  return error instanceof Error && /\bUNBLOCKED\b.*no longer exists/i.test(error.message);
}

/**
 * True for a refusal of a command over keys of several hash slots (`CROSSSLOT`): a sharded
 * server behind one address (a proxy, a managed "cluster" reached without the Cluster API).
 */
export function isCrossSlotError(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith("CROSSSLOT");
}

/** Chicory's scripts by name, as registered (see {@link nameScripts}). */
const namedScripts = new Map<string, string>();
/** SHA1 of each script's source -> its name, built on first lookup. */
let scriptNamesBySha: Map<string, string> | undefined;

/**
 * Records the names of scripts Chicory registers (`defineCommand`), so that an error Redis
 * reports by script SHA (an ACL refusal inside a script) can name the script.
 */
export function nameScripts(scripts: Readonly<Record<string, { readonly lua: string }>>): void {
  for (const [name, { lua }] of Object.entries(scripts)) namedScripts.set(name, lua);
  scriptNamesBySha = undefined;
}

/** The name of the Chicory script whose source has SHA1 `sha`, if it is one. */
export function scriptNameOf(sha: string): string | undefined {
  if (scriptNamesBySha === undefined) {
    scriptNamesBySha = new Map();
    for (const [name, lua] of namedScripts) scriptNamesBySha.set(createHash("sha1").update(lua).digest("hex"), name);
  }
  return scriptNamesBySha.get(sha.toLowerCase());
}
