/**
 * How a broker or backend location is shown to a user (the CLI's banner, a `get()` that found
 * no consumer): what decides which queues and records it reaches.
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { maskUrl } from "./url.js";

/** A SQLite location with a relative path also shows the file it resolves to here. */
function located(displayUrl: string): string {
  const path = /^sqlite:(?!\/|:memory:)(.+)$/.exec(displayUrl)?.[1];
  return path === undefined || isAbsolute(path) ? displayUrl : `${displayUrl} (${resolve(path)})`;
}

/** A location and, when its broker or backend has them, the settings that decide what it reaches. */
function withSettings(location: string, settings: string | undefined): string {
  return settings ? `${location}; ${settings}` : location;
}

/** An adapter's location as {@link located} and {@link withSettings} show it, its password masked. */
export function describeLocation(adapter: {
  readonly displayUrl: string;
  readonly displaySettings?: string | undefined;
}): string {
  return withSettings(located(maskUrl(adapter.displayUrl)), adapter.displaySettings);
}
