/**
 * Errors nobody caught (an unhandled promise rejection, an uncaught exception) while a CLI
 * command runs: by default the CLI reports one and exits 1; a command that must not die of a
 * stray error of user code (`chicory worker`, whose tasks run here) handles them instead.
 * @module
 */

/** The kind of a stray error: an unhandled promise rejection or an uncaught exception. */
export type StrayErrorKind = "rejection" | "exception";

type Handler = (kind: StrayErrorKind, error: unknown) => void;

let current: Handler | undefined;

/** Sends stray errors to `handler` until the returned function is called. */
export function handleStrayErrors(handler: Handler): () => void {
  current = handler;
  return () => {
    if (current === handler) current = undefined;
  };
}

/** Hands a stray error to the running command's handler; false when there is none. */
export function strayError(kind: StrayErrorKind, error: unknown): boolean {
  if (current === undefined) return false;
  current(kind, error);
  return true;
}
