/**
 * The stop signals of a long-running command (SIGINT, SIGTERM): the first asks for a graceful
 * stop, a second exits at once, with the code a shell reports for it.
 * @module
 */

/** The exit code of a process a signal ended, as a shell reports it: 128 + its number (130 for SIGINT, 143 for SIGTERM). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === "SIGTERM" ? 143 : 130;
}

/**
 * Calls `onFirst` at the first SIGINT or SIGTERM; at a second, calls `onSecond` (when given) and
 * exits at once ({@link signalExitCode}). Returns the function that removes the listeners.
 */
export function onStopSignals(
  onFirst: (signal: NodeJS.Signals) => void,
  onSecond?: (signal: NodeJS.Signals) => void,
): () => void {
  let isSignalled = false;
  const listener = (signal: NodeJS.Signals) => {
    if (isSignalled) {
      onSecond?.(signal);
      process.exit(signalExitCode(signal));
    }
    isSignalled = true;
    onFirst(signal);
  };
  process.on("SIGINT", listener).on("SIGTERM", listener);
  return () => {
    process.off("SIGINT", listener).off("SIGTERM", listener);
  };
}
