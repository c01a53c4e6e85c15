/**
 * Long values sent to Redis in pieces: no argument longer than the least any Redis server
 * takes in one (`proto-max-bulk-len` and `client-query-buffer-limit`, 1 MiB at least), so no
 * call is refused, or makes Redis close the connection, for one argument's length. Used for
 * result records (the backend, and the broker's acks) and dead letters (the broker).
 * @module
 */

/** The length of a piece: half of the least Redis takes in one argument. */
export const PIECE_BYTES = 512 * 1024;

/** True when `text` is longer than {@link PIECE_BYTES} in UTF-8 (counted only when it may be). */
export function isPieceSized(text: string): boolean {
  return text.length * 3 > PIECE_BYTES && Buffer.byteLength(text) > PIECE_BYTES;
}

/** `bytes` cut into pieces of {@link PIECE_BYTES} (views, not copies). */
export function inPieces(bytes: Buffer): Buffer[] {
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += PIECE_BYTES) pieces.push(bytes.subarray(at, at + PIECE_BYTES));
  return pieces;
}
