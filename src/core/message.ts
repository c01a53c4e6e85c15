/**
 * The wire message (SPEC §8): versioned JSON, size limit, name rules, optional
 * HMAC-SHA256 signature. Pure: no I/O.
 * @module
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { MessageTooLargeError, ValidationError } from "../errors.js";
import { findNonJson, isWellFormedText, type JsonValue, MAX_DEPTH, safeJsonParse } from "./json.js";
import { isValidName } from "./names.js";

/**
 * Deepest nesting of a message: the message object and its `args` array around arguments that
 * may themselves nest {@link MAX_DEPTH} levels (`delay()` refuses deeper ones). Read with
 * {@link MAX_DEPTH} alone, a message whose argument was 63 or 64 levels deep was published and
 * then refused by every worker, and its task never got a record.
 */
export const MESSAGE_MAX_DEPTH = MAX_DEPTH + 2;

/** Longest task id: the longest key the SQL backends store (a longer id could never get its record). */
export const MAX_TASK_ID_LENGTH = 255;

/** True for a task id: a well-formed string of 1-{@link MAX_TASK_ID_LENGTH} characters. */
export function isValidTaskId(id: unknown): id is string {
  return typeof id === "string" && id.length > 0 && id.length <= MAX_TASK_ID_LENGTH && isWellFormedText(id);
}

/** Current wire format version. */
export const MESSAGE_VERSION = 1;

/** Default maximum encoded message size: 1 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;

/** Longest `lastError` kept in a message (characters). */
export const MAX_LAST_ERROR_CHARS = 8192;

/** A task message as it travels through brokers (SPEC §8). */
export interface TaskMessage {
  /** Format version, always 1. */
  v: 1;
  /** Task id. */
  id: string;
  /** Registered task name. */
  name: string;
  /** Positional arguments. */
  args: JsonValue[];
  /** Retries already done (0 on the first attempt). */
  retries: number;
  /** Earliest time to run (ISO), or null. */
  eta: string | null;
  /** Priority 0-255, or null. */
  priority: number | null;
  /** Time of the first failure (ISO), or null. */
  firstFailureAt: string | null;
  /** Last error text (truncated), or null. */
  lastError: string | null;
}

/** Why a raw message could not be turned into a {@link TaskMessage}. */
export type DecodeFailure =
  | {
      /** Always false: the message was not decoded. */
      ok: false;
      /** The raw message is larger than `maxMessageBytes`. */
      reason: "too_large";
      /** What was wrong, in words. */
      error: string;
    }
  | {
      /** Always false: the message was not decoded. */
      ok: false;
      /** The raw message is empty or not JSON. */
      reason: "decode_error";
      /** What was wrong, in words. */
      error: string;
    }
  | {
      /** Always false: the message was not decoded. */
      ok: false;
      /** The JSON is not a valid task message. */
      reason: "schema_error";
      /** What was wrong, in words. */
      error: string;
    }
  | {
      /** Always false: the message was not decoded. */
      ok: false;
      /** A signing key is set and the message is not signed, or its signature is malformed or does not match. */
      reason: "unsigned" | "bad_signature";
      /** What was wrong, in words. */
      error: string;
    };

/** Result of {@link MessageCodec.decode}. */
export type DecodeResult =
  | {
      /** True: the message was decoded. */
      ok: true;
      /** The decoded message. */
      message: TaskMessage;
    }
  | DecodeFailure;

/** Options of a {@link MessageCodec}. */
export interface MessageCodecOptions {
  /** Maximum encoded size in bytes (default 1 MiB). */
  maxMessageBytes?: number;
  /** HMAC-SHA256 key; when set, messages are signed and unsigned/forged ones rejected. */
  signingKey?: string | null;
}

/** Encodes and decodes {@link TaskMessage}s, enforcing size, shape and signature. */
export class MessageCodec {
  /** Maximum encoded size in bytes. */
  readonly maxMessageBytes: number;
  readonly #key: Buffer | null;

  constructor(options: MessageCodecOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.#key = options.signingKey ? Buffer.from(options.signingKey, "utf8") : null;
  }

  /** True when messages are signed and verified. */
  get isSigning(): boolean {
    return this.#key !== null;
  }

  /**
   * Serializes a message (adding `sig` when signing).
   * @throws MessageTooLargeError over the size limit
   * @throws ValidationError when the message is malformed or its args are not JSON
   */
  encode(message: TaskMessage): string {
    // the args array one level above its arguments' first (-1): each argument may nest as deep as
    // delay() takes (MAX_DEPTH levels), as it checks them one by one
    const bad = findNonJson(message.args, "args", -1);
    if (bad) throw new ValidationError(`task "${message.name}": ${bad}`);
    const problem = checkShape(message);
    if (problem) throw new ValidationError(`invalid message: ${problem}`);
    return this.#finish(JSON.stringify(canonical(message)));
  }

  /**
   * @internal {@link MessageCodec.encode} for a message that `delay()` has just built in
   * canonical member order from checked parts (arguments, id, priority, eta): signs and checks
   * the size only.
   * @throws MessageTooLargeError over the size limit
   */
  encodeChecked(message: TaskMessage): string {
    return this.#finish(JSON.stringify(message));
  }

  #finish(json: string): string {
    let body = json;
    if (this.#key) body = `${body.slice(0, -1)},"sig":"${this.#sign(body)}"}`;
    const size = Buffer.byteLength(body, "utf8");
    if (size > this.maxMessageBytes) throw new MessageTooLargeError(size, this.maxMessageBytes);
    return body;
  }

  /** Parses and checks a raw message; never throws. */
  decode(raw: string | Buffer): DecodeResult {
    const size = typeof raw === "string" ? Buffer.byteLength(raw, "utf8") : raw.length;
    if (size > this.maxMessageBytes) {
      return { ok: false, reason: "too_large", error: `message is ${size} bytes, over ${this.maxMessageBytes}` };
    }
    const text = typeof raw === "string" ? raw : raw.toString("utf8");
    if (text === "")
      return {
        ok: false,
        reason: "decode_error",
        error: "empty message (an empty body: on Redis, an empty or missing `data` field)",
      };
    let parsed: unknown;
    try {
      parsed = safeJsonParse(text, MESSAGE_MAX_DEPTH);
    } catch (error) {
      return { ok: false, reason: "decode_error", error: `not JSON: ${(error as Error).message.slice(0, 200)}` };
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      return { ok: false, reason: "schema_error", error: "message is not a JSON object" };
    }
    const record = parsed as Record<string, unknown>;
    if (this.#key) {
      const failure = this.#verify(text, record);
      if (failure) return failure;
    }
    const problem = checkShape(record);
    if (problem) return { ok: false, reason: "schema_error", error: problem };
    // A number too large for a double (1e400) parses as Infinity: an argument no delay() could
    // send, and one a retry of the message could never encode (the retry would fail until the
    // message was dead-lettered as a poison message). (A walk of the parsed arguments: a tenth
    // of the cost of a scan of the text for such a literal, for a message of a few arguments.)
    if (holdsNonFinite(record.args)) {
      const bad = findNonJson(record.args, "args", -1);
      if (bad) return { ok: false, reason: "schema_error", error: bad };
    }
    return { ok: true, message: canonical(record as unknown as TaskMessage) };
  }

  /** Checks the signature over the exact bytes that were signed (the body before `,"sig"`). */
  #verify(text: string, record: Record<string, unknown>): DecodeFailure | null {
    const sig = record.sig;
    if (typeof sig !== "string") return { ok: false, reason: "unsigned", error: "message is not signed" };
    const suffix = `,"sig":"${sig}"}`;
    if (!text.endsWith(suffix)) return { ok: false, reason: "bad_signature", error: "message signature is malformed" };
    const expected = Buffer.from(this.#sign(`${text.slice(0, -suffix.length)}}`), "utf8");
    const given = Buffer.from(sig, "utf8");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return { ok: false, reason: "bad_signature", error: "message signature does not match" };
    }
    return null;
  }

  #sign(body: string): string {
    return createHmac("sha256", this.#key as Buffer)
      .update(body)
      .digest("base64url");
  }
}

/** The message's fields in a fixed order (what is signed). */
function canonical(m: TaskMessage): TaskMessage {
  return {
    v: m.v,
    id: m.id,
    name: m.name,
    args: m.args,
    retries: m.retries,
    eta: m.eta,
    priority: m.priority,
    firstFailureAt: m.firstFailureAt,
    lastError: m.lastError,
  };
}

/**
 * Whether parsed JSON `value` holds a number that is not finite (a literal too large for a
 * double, such as `1e400`, parses as `Infinity`). Recursive: the parse bounds the depth
 * ({@link MESSAGE_MAX_DEPTH}).
 */
function holdsNonFinite(value: unknown): boolean {
  if (typeof value === "number") return !Number.isFinite(value);
  if (value === null || typeof value !== "object") return false;
  if (Array.isArray(value)) {
    for (const item of value) if (holdsNonFinite(item)) return true;
    return false;
  }
  for (const key in value) if (holdsNonFinite((value as Record<string, unknown>)[key])) return true;
  return false;
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

function isIsoOrNull(value: unknown): boolean {
  return value === null || (typeof value === "string" && ISO_DATE.test(value) && !Number.isNaN(Date.parse(value)));
}

/** `: "…" has no offset (a local time, read differently on each machine)` for such a value, else "". */
function isoWithoutOffset(value: unknown): string {
  if (typeof value !== "string" || !isIsoOrNull(`${value}Z`)) return "";
  return `: "${value}" has no offset (a local time, read differently on each machine)`;
}

/** Returns a description of the first shape problem, or null. */
function checkShape(m: Record<string, unknown> | TaskMessage): string | null {
  const r = m as Record<string, unknown>;
  if (r.v === undefined) return `no message version ("v": ${MESSAGE_VERSION} expected): not a Chicory task message?`;
  if (r.v !== MESSAGE_VERSION) return `unsupported message version ${JSON.stringify(r.v)?.slice(0, 20)}`;
  if (!isValidTaskId(r.id)) {
    return `id must be a well-formed string of 1-${MAX_TASK_ID_LENGTH} chars`;
  }
  if (!isValidName(r.name)) return "name must be 1-128 of [A-Za-z0-9._:-]";
  if (!Array.isArray(r.args)) return "args must be an array";
  if (!Number.isSafeInteger(r.retries) || (r.retries as number) < 0 || (r.retries as number) > 1_000_000) {
    return "retries must be a non-negative integer";
  }
  if (!isIsoOrNull(r.eta))
    return `eta must be an ISO 8601 date-time with its offset (Z or +hh:mm) or null${isoWithoutOffset(r.eta)}`;
  if (
    r.priority !== null &&
    !(Number.isInteger(r.priority) && (r.priority as number) >= 0 && (r.priority as number) <= 255)
  ) {
    return "priority must be an integer 0-255 or null";
  }
  if (!isIsoOrNull(r.firstFailureAt)) {
    return `firstFailureAt must be an ISO 8601 date-time with its offset (Z or +hh:mm) or null${isoWithoutOffset(r.firstFailureAt)}`;
  }
  if (r.lastError !== null && typeof r.lastError !== "string") return "lastError must be a string or null";
  return null;
}

/** Longest raw message {@link peekMessage} parses (4 MiB of text); longer ones are not parsed. */
export const PEEK_MAX_CHARS = 4 * 1024 * 1024;

/**
 * Reads a raw message leniently (no signature check), for display of DLQ entries.
 * Returns null when it is not a JSON object, or longer than `maxChars` (a hostile 64 MiB
 * body is never parsed just to show or dead-letter it).
 */
export function peekMessage(raw: string, maxChars: number = PEEK_MAX_CHARS): Partial<TaskMessage> | null {
  if (raw.length > maxChars) return null;
  try {
    const parsed = safeJsonParse(raw, MESSAGE_MAX_DEPTH);
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) return parsed as Partial<TaskMessage>;
  } catch {
    // not JSON: the caller shows the raw text
  }
  return null;
}

// `{"v":1,"id":"…","name":"…"`: how every message Chicory encodes begins (canonical order)
const HEAD = /^\{"v":1,"id":("(?:[^"\\]|\\.){1,1530}"),"name":("(?:[^"\\]|\\.){1,128}")/;

/**
 * The task id and name of a raw task message the worker cannot decode (too large, or of a shape
 * it refuses), read from its first bytes (a message Chicory encoded begins with them), or from
 * the whole body when it is no longer than {@link PEEK_MAX_CHARS}. Only a body that says it is
 * a task message counts: a version number, a well-formed id and a valid task name (any other
 * JSON object with an `id`, another producer's, gives null). Unverified: only for a message
 * whose signature is not checked.
 */
export function peekHead(raw: string): { id: string; name: string } | null {
  let id: unknown;
  let name: unknown;
  const head = HEAD.exec(raw.slice(0, 2048));
  if (head) {
    try {
      id = JSON.parse(head[1] as string);
      name = JSON.parse(head[2] as string);
    } catch {
      id = undefined;
    }
  } else {
    const peeked = peekMessage(raw);
    if (typeof peeked?.v !== "number") return null;
    id = peeked.id;
    name = peeked.name;
  }
  return isValidTaskId(id) && isValidName(name) ? { id, name } : null;
}

/** Truncates an error text to {@link MAX_LAST_ERROR_CHARS}. */
export function truncateError(text: string): string {
  return text.length > MAX_LAST_ERROR_CHARS ? `${text.slice(0, MAX_LAST_ERROR_CHARS - 1)}…` : text;
}
