/**
 * Connection-URL helpers: masking passwords for display, and reading URL parts.
 * @module
 */

/**
 * Replaces the password of a URL (and of `password=` query parameters) with `***`. The
 * password runs to the last `@`: one written without percent-encoding (`p@ss#w/rd`) makes
 * an invalid URL, and is still masked whole when that URL is shown in the error.
 */
export function maskUrl(url: string): string {
  // (the user name runs to the first `:`, and may hold an `@`, as the URL standard reads it)
  let masked = url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#:]*):.*@/is, "$1:***@");
  if (masked === url) masked = maskMistypedUserinfo(url);
  masked = masked.replace(/([?&](?:password|pass|pwd)=)[^&#]*/gi, "$1***");
  return masked;
}

/**
 * A spec with an `@` that is not a `scheme://user:password@` URL (a typo: `redis:/u:p@host`,
 * `redis//u:p@host`, `u:p@host`) may still hold a password before its last `@`: all of that but
 * the scheme is masked. A well-formed `scheme://user@host` (no password), or one masked already,
 * is left as it is.
 */
function maskMistypedUserinfo(spec: string): string {
  const at = spec.lastIndexOf("@");
  // well-formed: `scheme://user@`, or `scheme://user:***@` (masked already)
  if (at < 0 || /^[a-z][a-z0-9+.-]*:\/\/[^/?#@:]*(?::\*\*\*)?@/i.test(spec)) return spec;
  const scheme = /^[a-z][a-z0-9+.-]*:(?:\/\/?)?/i.exec(spec.slice(0, at))?.[0] ?? "";
  return spec.slice(scheme.length, at).length > 0 ? `${scheme}***${spec.slice(at)}` : spec;
}

/** The end of the messages of {@link unencodedUserinfo}. */
const ENCODE_HINT = "percent-encode @ : / ? # % in a user name or password";

/**
 * What is wrong with a URL whose user name or password holds a character that ends it early, or
 * undefined. The URL parser ends the authority at the first `/`, `?` or `#`: the rest of the
 * user name or password would be taken for the host, the port, the path, a query or a fragment
 * (dropped silently), and an error naming that host (`ENOTFOUND`) or path would show part of the
 * password. Such a URL is refused before any connection, in a message that quotes nothing but
 * the masked URL. Told by an `@` after:
 * - a `#` (no URL here has a fragment);
 * - a `?` with no `/` or `@` before it and no `=` or `&` between it and the `@` (a query's
 *   `key=value` may hold an `@`);
 * - an authority whose port is not a number (`u:pa/ss@host`: the port would be `pa`);
 * - a path, when what follows its last `@` is a host and a port or a path of its own, or any
 *   `@` with `anyAt` (a path that can hold no `@`, as Redis's database number); otherwise a
 *   database or vhost named with an `@` (`/team@prod`) is left alone.
 */
export function unencodedUserinfo(url: string, anyAt = false): string | undefined {
  const rest = /^[a-z][a-z0-9+.-]*:\/\/(.*)$/is.exec(url)?.[1];
  if (rest === undefined || !rest.includes("@")) return undefined;
  const hash = rest.indexOf("#");
  if (hash >= 0 && rest.indexOf("@", hash) > hash) {
    return `${maskUrl(url)}: a "#" in the user name or password ends it there; ${ENCODE_HINT} (# as %23)`;
  }
  if (/^[^/?#@]*\?[^=&#]*@/.test(rest)) {
    return `${maskUrl(url)}: a "?" in the user name or password ends it there; ${ENCODE_HINT} (? as %3F)`;
  }
  const authority = /^[^/?#]*/.exec(rest)?.[0] ?? "";
  const port = /^(?:\[[^\]]*\]|[^:]*):(.*)$/s.exec(authority)?.[1];
  const atLater = !authority.includes("@");
  if (atLater && port !== undefined && !/^\d*$/.test(port)) {
    return `${maskUrl(url)}: an "@" after the host; ${ENCODE_HINT} (e.g. / as %2F, @ as %40)`;
  }
  const path = /^[^/?#]*(\/[^?#]*)/.exec(rest)?.[1];
  if (path === undefined || !path.includes("@")) return undefined;
  const after = path.slice(path.lastIndexOf("@") + 1);
  if (!anyAt && !after.includes("/") && !/:\d+$/.test(after)) return undefined;
  return `${maskUrl(url)}: an "@" after the host; ${ENCODE_HINT} (e.g. / as %2F, @ as %40)`;
}

/**
 * Masks the password of every URL found inside free text (error messages, stacks), e.g.
 * `connect to postgres://app:s3cret@db/x failed` -> `connect to postgres://app:***@db/x failed`.
 */
export function maskUrlsIn(text: string): string {
  return (
    text
      // (not the format hint `redis://[user:password@]host` of Chicory's own messages)
      .replace(/\b([a-z][a-z0-9+.-]*:\/\/(?!\[user:password@\])[^\s/?#:'"`]*):[^\s'"`]*@/gi, "$1:***@")
      .replace(/([?&](?:password|pass|pwd)=)[^&#\s'"`]*/gi, "$1***")
  );
}

/**
 * Removes every occurrence of the URL's password from `text` (for error messages), where it
 * stands on its own: not inside a longer run of letters and digits (a short password such as
 * `e` or `redis` would otherwise mask parts of every word holding it, garbling the message and
 * showing where the password was).
 */
export function redactSecrets(text: string, ...secrets: Array<string | undefined | null>): string {
  let out = text;
  for (const secret of secrets) {
    if (!secret || !out.includes(secret)) continue;
    const escaped = secret.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    out = out.replace(new RegExp(`(?<![A-Za-z0-9])${escaped}(?![A-Za-z0-9])`, "g"), "***");
  }
  return out;
}

/**
 * The password of a URL, decoded (as written when it holds a `%` that is not a
 * percent-escape), or undefined: for redacting it from messages.
 */
export function urlPassword(url: string): string | undefined {
  let password: string;
  try {
    password = new URL(url).password;
  } catch {
    return undefined;
  }
  if (!password) return undefined;
  try {
    return decodeURIComponent(password);
  } catch {
    return password;
  }
}

/** The scheme of a URL without the colon, lower-cased (`"redis"`, `"sqlite"`), or undefined. */
export function urlScheme(url: string): string | undefined {
  const match = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  return match?.[1]?.toLowerCase();
}
