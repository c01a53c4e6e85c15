/**
 * Typed readers of `CHICORY_*` settings from an environment map. Each reader fails fast with
 * a {@link ConfigurationError} naming the variable. Pure: the map is passed in.
 * @module
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseEnv } from "node:util";
import { ConfigurationError } from "../errors.js";
import { type Duration, toMs } from "./duration.js";
import { KNOWN_ENV_NAMES, KNOWN_ENV_PREFIXES } from "./env-names.js";
import { describeValue } from "./schema.js";

/** A read-only map of environment variables. */
export type EnvMap = Readonly<Record<string, string | undefined>>;

/**
 * Environment as Chicory sees it: `process.env` over the `.env` file of `cwd`
 * (a variable set in the process wins over the file).
 */
export function loadEnv(cwd: string = process.cwd(), processEnv: EnvMap = process.env): EnvMap {
  let fileEnv: Record<string, string> = {};
  try {
    fileEnv = parseEnv(readFileSync(join(cwd, ".env"), "utf8")) as Record<string, string>;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new ConfigurationError(`cannot read ${join(cwd, ".env")}: ${(error as Error).message}`, { cause: error });
    }
  }
  return { ...fileEnv, ...processEnv };
}

/** The names the readers below were asked for in this process (see {@link unknownEnvNames}). */
const consulted = new Set<string>();

/** Longest edit distance at which a known name is suggested for an unknown one. */
const SUGGESTION_DISTANCE = 4;

/** Levenshtein distance of `a` and `b`, or `max + 1` once it is known to exceed `max`. */
function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const d = Math.min((previous[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
      row.push(d);
      best = Math.min(best, d);
    }
    if (best > max) return max + 1;
    previous = row;
  }
  return previous[b.length] ?? max + 1;
}

/**
 * The `CHICORY_*` variables set in `env` that are no Chicory setting (not in
 * {@link KNOWN_ENV_NAMES}, and not read by anything in this process), each with the closest
 * name that is, when one is within a few typos (`CHICORY_WORKER_CONCURENCY` →
 * `CHICORY_WORKER_CONCURRENCY`) or ends in the same words (`CHICORY_QUEUE` →
 * `CHICORY_WORKER_QUEUE`): likely misspellings, which would otherwise be ignored
 * without a word. A variable of a broker or backend the process does not use is not reported.
 */
export function unknownEnvNames(env: EnvMap): Array<{ name: string; meant: string | undefined }> {
  const found: Array<{ name: string; meant: string | undefined }> = [];
  for (const name of Object.keys(env)) {
    if (!name.startsWith("CHICORY_") || KNOWN_ENV_NAMES.has(name) || consulted.has(name)) continue;
    if (KNOWN_ENV_PREFIXES.some((prefix) => name.startsWith(prefix))) continue;
    let meant: string | undefined;
    let distance = SUGGESTION_DISTANCE + 1;
    const candidates = [...KNOWN_ENV_NAMES, ...consulted];
    for (const known of candidates) {
      const d = editDistance(name, known, Math.min(SUGGESTION_DISTANCE, distance - 1));
      if (d < distance) {
        distance = d;
        meant = known;
      }
    }
    // a segment left out (`CHICORY_QUEUE`, `CHICORY_REDIS_URL`): the shortest name ending in the rest
    const rest = `_${name.slice("CHICORY_".length)}`;
    for (const known of meant === undefined ? candidates : []) {
      if (known.endsWith(rest) && (meant === undefined || known.length < meant.length)) meant = known;
    }
    found.push({ name, meant });
  }
  return found;
}

/** The names the readers were asked for in this process (tests check them against {@link KNOWN_ENV_NAMES}). */
export function consultedEnvNames(): ReadonlySet<string> {
  return consulted;
}

function raw(env: EnvMap, name: string): string | undefined {
  consulted.add(name);
  const value = env[name];
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** A string variable, or `fallback`. */
export function envString(env: EnvMap, name: string): string | undefined;
export function envString(env: EnvMap, name: string, fallback: string): string;
export function envString(env: EnvMap, name: string, fallback?: string): string | undefined {
  return raw(env, name) ?? fallback;
}

/** An integer variable within [min, max], or `fallback`. */
export function envInt(env: EnvMap, name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  return checkInt(decimalInt(value), name, min, max, value);
}

/**
 * `value` as a number when it is written in decimal digits (`Number` also reads `0x10` and
 * `1e1`, which the CLI's flags refuse), else NaN (refused by the bounds check, naming it).
 */
function decimalInt(value: string): number {
  return /^[-+]?\d+$/.test(value) ? Number(value) : Number.NaN;
}

/**
 * A whole number of milliseconds from a `_MS` variable: a bare number is milliseconds
 * (`"5000"`), a unit string is converted (`"5s"`, `"250ms"`, `"1m"`), or `fallback`.
 */
export function envMillis(env: EnvMap, name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (!/[a-z]\s*$/i.test(value)) return checkInt(decimalInt(value), name, min, max, value);
  let ms: number;
  try {
    ms = Math.round(toMs(value, name));
  } catch {
    // (not toMs's own message: it speaks of seconds, which a bare number here is not)
    throw new ConfigurationError(
      `${name}: expected milliseconds (5000) or a unit string ("5s", "250ms"), got ${JSON.stringify(value.slice(0, 50))}`,
    );
  }
  return checkInt(ms, name, min, max, value);
}

/** Checks an integer option; the error names `name`. */
export function checkInt(
  value: number,
  name: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
  shown: unknown = value,
): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    const text = typeof shown === "number" ? String(shown) : JSON.stringify(shown);
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new ConfigurationError(`${name}: expected an integer ${range}, got ${text}`);
  }
  return value;
}

/** A boolean option given in code; anything else (a JavaScript caller's `"false"`) is refused, naming `name`. */
export function checkFlag(value: unknown, name: string): boolean {
  if (typeof value !== "boolean")
    throw new ConfigurationError(`${name}: expected true or false, got ${describeValue(value)}`);
  return value;
}

/** A boolean variable (`true/false/1/0/yes/no/on/off`), or `fallback`. */
export function envBool(env: EnvMap, name: string, fallback: boolean): boolean {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  const lower = value.toLowerCase();
  if (["1", "true", "yes", "on"].includes(lower)) return true;
  if (["0", "false", "no", "off"].includes(lower)) return false;
  throw new ConfigurationError(`${name}: expected true or false, got ${JSON.stringify(value)}`);
}

/** A duration variable in milliseconds (seconds or a unit string), or `fallbackMs`. */
export function envDurationMs(env: EnvMap, name: string, fallbackMs: number): number {
  const value = raw(env, name);
  return value === undefined ? fallbackMs : toMs(value, name);
}

/** A duration option in milliseconds; `undefined` gives `fallbackMs`. */
export function durationMs(value: Duration | undefined, name: string, fallbackMs: number): number {
  return value === undefined ? fallbackMs : toMs(value, name);
}

/** One of `choices`, or `fallback`. */
export function envChoice<T extends string>(env: EnvMap, name: string, choices: readonly T[], fallback: T): T {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  return checkChoice(value, name, choices);
}

/** The keys of `T`, all of them (the compiler checks the list against the type). */
export function keysOf<T>(keys: { readonly [K in keyof Required<T>]: true }): ReadonlySet<string> {
  return new Set(Object.keys(keys));
}

/**
 * Refuses an options object with a key not in `known` (an untyped caller's typo would be ignored
 * silently): `${name}: unknown option "key"`, then `notes[key]` when given, else the options; a
 * `ConfigurationError` unless `Refusal` says which error.
 */
export function checkOptionKeys(
  options: object,
  name: string,
  known: ReadonlySet<string>,
  notes: Readonly<Record<string, string>> = {},
  Refusal: new (message: string) => Error = ConfigurationError,
): void {
  // an untyped caller's `null` (or a number) would fail below with a bare TypeError
  if (options === null || typeof options !== "object") {
    throw new Refusal(`${name}: options must be an object, got ${options === null ? "null" : typeof options}`);
  }
  for (const key of Object.keys(options)) {
    if (known.has(key)) continue;
    const note = Object.hasOwn(notes, key) ? notes[key] : ` (options: ${[...known].join(", ")})`;
    throw new Refusal(`${name}: unknown option "${key.slice(0, 40)}"${note}`);
  }
}

/**
 * Checks a choice option; accepts any letter case. `value` may be anything (an option from
 * JavaScript without types): a non-string is refused as a wrong choice is.
 */
export function checkChoice<T extends string>(value: unknown, name: string, choices: readonly T[]): T {
  const text = typeof value === "string" ? value.toLowerCase() : undefined;
  const found = text === undefined ? undefined : choices.find((c) => c.toLowerCase() === text);
  if (found === undefined) {
    const shown =
      typeof value === "string"
        ? JSON.stringify(value)
        : value !== null && typeof value === "object"
          ? "an object"
          : String(value);
    throw new ConfigurationError(`${name}: expected one of ${choices.join(", ")}, got ${shown}`);
  }
  return found;
}
