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
  let masked = url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*):.*@/is, "$1:***@");
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

/**
 * What is wrong with a URL whose user name or password holds an unencoded `?` or `#` (see
 * below), or an unencoded `/` (its `@` then lies after the host: `scheme://u:pa@ss/rest@host:port/db`), or undefined. The URL parser ends
 * the host at that `/`, taking part of the password for the host and the rest for the path, so
 * an error naming that host (`ENOTFOUND`) or path would show it: such a URL is refused before
 * any connection, in a message that quotes nothing but the masked URL. Told by what follows the
 * path's last `@`: a host and a port, or a host and a path of its own. With `anyAt` (a path
 * that can hold no `@`, as Redis's database number), any `@` in the path counts; otherwise a
 * database or vhost named with an `@` (`/team@prod`) is left alone.
 */
export function unencodedUserinfo(url: string, anyAt = false): string | undefined {
  // `scheme://user:pa#ss@host`: the parser ends the authority at the `#` (or `?`), taking the
  // user name for the host and the rest of the password for the port, fragment or query. Told
  // by a `user:` before it, no `@` before it, and an `@` after it with no `=`/`&` between (a
  // query's `key=value` may hold an `@`).
  const early = /^[a-z][a-z0-9+.-]*:\/\/([^/?#@]*:[^/?#@]*)([?#])([^=&]*)@/i.exec(url);
  if (early !== null) {
    return `${maskUrl(url)}: a "${early[2]}" in the user name or password ends it there; percent-encode @ : / ? # % in a user name or password (e.g. # as %23, ? as %3F)`;
  }
  const path = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(\/[^?#]*)/i.exec(url)?.[1];
  if (path === undefined || !path.includes("@")) return undefined;
  const after = path.slice(path.lastIndexOf("@") + 1);
  if (!anyAt && !after.includes("/") && !/:\d+$/.test(after)) return undefined;
  return `${maskUrl(url)}: an "@" after the host; percent-encode @ : / ? # % in a user name or password (e.g. / as %2F, @ as %40)`;
}

/**
 * Masks the password of every URL found inside free text (error messages, stacks), e.g.
 * `connect to postgres://app:s3cret@db/x failed` -> `connect to postgres://app:***@db/x failed`.
 */
export function maskUrlsIn(text: string): string {
  return text
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/[^\s/?#@:'"`]*):[^\s'"`]*@/gi, "$1:***@")
    .replace(/([?&](?:password|pass|pwd)=)[^&#\s'"`]*/gi, "$1***");
}

/** Removes every occurrence of the URL's password from `text` (for error messages). */
export function redactSecrets(text: string, ...secrets: Array<string | undefined | null>): string {
  let out = text;
  for (const secret of secrets) {
    if (secret && secret.length >= 1) out = out.split(secret).join("***");
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
