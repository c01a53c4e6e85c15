/**
 * Safe JSON helpers: a check that a value is JSON-representable (naming the bad part),
 * and a parser that leaves `__proto__` / `constructor` keys inert.
 * @module
 */

/** A JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * The type of a value no argument has: what {@link JsonArg} puts in place of a type that is not
 * JSON, so that passing one fails to compile with `Why` in the message.
 */
export interface NotJson<Why extends string> {
  /** Never present: no value is a `NotJson`. */
  readonly "not JSON": Why;
}

/** The types that are JSON as they are (`undefined` for an optional place: an object's property, a trailing argument). */
type JsonShape = JsonItem | undefined;

/** A JSON value as an array holds it: never `undefined` (JSON has no such item). */
type JsonItem = string | number | boolean | null | readonly JsonItem[] | { readonly [key: string]: JsonShape };

/** What an array item of type `E` may be: {@link JsonArg}, with `undefined` refused (`ids.map((id) => map.get(id))`). */
type JsonItemArg<E> = unknown extends E
  ? E
  : undefined extends E
    ? JsonArg<Exclude<E, undefined>> | NotJson<"undefined in an array is not JSON: use null">
    : JsonArg<E>;

/**
 * `T` as a task argument (or result) may be: `T` itself where it is JSON (strings, numbers,
 * booleans, null, arrays and objects of these), with {@link NotJson} in place of what is not (a
 * `Date`, `Map`, `Set`, `bigint`, function, symbol...). `unknown` and `any` stay as they are.
 * An array item that may be `undefined` is refused too (JSON has none; `delay()` and the worker
 * refuse one when they run). What a type cannot tell is checked when `delay()` runs: a class
 * instance, `NaN`, and an `undefined` argument before others.
 */
export type JsonArg<T> = unknown extends T ? T : [T] extends [JsonShape] ? T : JsonArgOf<T>;

/** {@link JsonArg} of a type that is not JSON as a whole: part by part. */
type JsonArgOf<T> = T extends string | number | boolean | null | undefined
  ? T
  : T extends bigint
    ? NotJson<"a bigint is not JSON: use a string">
    : T extends symbol
      ? NotJson<"a symbol is not JSON">
      : T extends (...args: never) => unknown
        ? NotJson<"a function is not JSON">
        : T extends Date
          ? NotJson<"a Date is not JSON: use date.toISOString()">
          : T extends ReadonlyMap<unknown, unknown>
            ? NotJson<"a Map is not JSON: use Object.fromEntries(map)">
            : T extends ReadonlySet<unknown>
              ? NotJson<"a Set is not JSON: use [...set]">
              : T extends RegExp | Promise<unknown> | ArrayBuffer | ArrayBufferView
                ? NotJson<"only plain objects and arrays are JSON">
                : T extends readonly unknown[]
                  ? { [K in keyof T]: JsonItemArg<T[K]> }
                  : { [K in keyof T]: JsonArg<T[K]> };

/** An argument list as `delay()` takes it: each argument's {@link JsonArg}. */
export type JsonArgs<A extends readonly unknown[]> = { [K in keyof A]: JsonArg<A[K]> };

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * True when `text` is well-formed UTF-16 (no lone surrogate), i.e. it survives a round trip
 * through UTF-8 (Redis, SQL, AMQP) unchanged. `String.prototype.isWellFormed` (ES2024).
 */
export function isWellFormedText(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/** Maximum nesting depth accepted in payloads (arrays/objects). */
export const MAX_DEPTH = 64;

/**
 * Returns `null` when `value` is JSON-representable (plain objects, arrays, strings,
 * finite numbers, booleans, null), else a description of the first offending part
 * with its path (e.g. `"[1].when: a Date is not plain JSON"`). An object property whose
 * value is `undefined` (an optional property left unset) is allowed: JSON leaves it out, as
 * `JSON.stringify` does. `undefined` anywhere else (alone, in an array) is not JSON.
 */
export function findNonJson(value: unknown, path = "", depth = 0, seen: Set<object> = new Set()): string | null {
  if (value === null) return null;
  switch (typeof value) {
    case "string":
    case "boolean":
      return null;
    case "number":
      return Number.isFinite(value) ? null : `${path || "value"}: ${String(value)} is not a finite number`;
    case "bigint":
      return `${path || "value"}: BigInt is not JSON (convert it to a string)`;
    case "function":
      return `${path || "value"}: a function is not JSON`;
    case "symbol":
      return `${path || "value"}: a symbol is not JSON`;
    case "undefined":
      return `${path || "value"}: undefined is not JSON`;
    default:
      break;
  }
  const obj = value as object;
  if (depth >= MAX_DEPTH) return `${path || "value"}: nested deeper than ${MAX_DEPTH} levels`;
  if (seen.has(obj)) return `${path || "value"}: circular reference`;
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      // (JSON.stringify would send what an array's own toJSON returns instead of its items)
      if (typeof (obj as { toJSON?: unknown }).toJSON === "function") {
        return `${path || "value"}.toJSON: a function is not JSON`;
      }
      for (let i = 0; i < obj.length; i++) {
        const bad = findNonJson(obj[i], `${path}[${i}]`, depth + 1, seen);
        if (bad) return bad;
      }
      return null;
    }
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const kind = (obj as { constructor?: { name?: string } }).constructor?.name ?? "object";
      return `${path || "value"}: ${/^(?:[aeio]|u(?![b-df-hj-np-tv-z][aeiouy]|int|rl))/i.test(kind) ? "an" : "a"} ${kind} is not plain JSON`;
    }
    for (const key of Object.keys(obj)) {
      let item: unknown;
      try {
        item = (obj as Record<string, unknown>)[key];
      } catch (error) {
        return threw(path ? `${path}.${key}` : key, error); // a getter
      }
      if (item === undefined) continue;
      const bad = findNonJson(item, path ? `${path}.${key}` : key, depth + 1, seen);
      if (bad) return bad;
    }
    return null;
  } catch (error) {
    return threw(path || "value", error); // a Proxy trap
  } finally {
    seen.delete(obj);
  }
}

/** What is wrong with a value whose reading threw `error` (a getter, a Proxy trap): not data JSON can hold. */
function threw(path: string, error: unknown): string {
  let reason: string;
  try {
    reason = String(error instanceof Error ? error.message : error);
  } catch {
    reason = "an error that cannot be shown";
  }
  return `${path}: reading it threw (${reason.slice(0, 200)})`;
}

/**
 * `JSON.parse` that turns `__proto__` keys into plain own data properties (never a
 * prototype change) and rejects nesting deeper than `maxDepth` (default {@link MAX_DEPTH};
 * a stored record that wraps a payload in its own levels passes a larger one).
 * @throws SyntaxError on invalid JSON or excessive depth
 */
export function safeJsonParse(text: string, maxDepth: number = MAX_DEPTH): unknown {
  checkDepth(text, maxDepth);
  // Fast path: without a "__proto__" key anywhere (written plainly or with \u escapes) there is
  // nothing to neutralize (JSON.parse itself never calls setters or builds prototypes).
  if (!text.includes("__proto__") && !text.includes("\\u")) return JSON.parse(text);
  return JSON.parse(text, function reviver(this: unknown, _key, value) {
    if (value !== null && typeof value === "object" && !Array.isArray(value) && Object.hasOwn(value, "__proto__")) {
      // JSON.parse already creates "__proto__" as an own property; copying keeps it inert data.
      const copy: Record<string, unknown> = Object.create(null);
      for (const k of Object.keys(value)) {
        Object.defineProperty(copy, k, {
          value: (value as Record<string, unknown>)[k],
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return copy;
    }
    return value;
  });
}

function checkDepth(text: string, maxDepth: number): void {
  if (!mayNestDeeperThan(text, maxDepth)) return;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > maxDepth) throw new SyntaxError(`JSON nested deeper than ${maxDepth} levels`);
    } else if (c === 125 || c === 93) depth--;
  }
}

/**
 * False when `text` holds at most `maxDepth` opening brackets (`{` and `[`, inside strings or
 * not): it cannot nest deeper, and the character walk is skipped. `indexOf` is native, so
 * typical messages (a few brackets) cost almost nothing.
 */
function mayNestDeeperThan(text: string, maxDepth: number): boolean {
  let opening = 0;
  for (let i = text.indexOf("{"); i !== -1; i = text.indexOf("{", i + 1)) if (++opening > maxDepth) return true;
  for (let i = text.indexOf("["); i !== -1; i = text.indexOf("[", i + 1)) if (++opening > maxDepth) return true;
  return false;
}
