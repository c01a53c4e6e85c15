/**
 * One call shared by the callers of a short window: many `get()`s timing out together ask the
 * broker for a queue's consumer count once, not once each.
 * @module
 */

/**
 * `call`, its promise shared per key by the calls made within `ms` of the first (a rejected
 * one is not kept: the next call asks again).
 */
export function sharedWithin<V>(ms: number, call: (key: string) => Promise<V>): (key: string) => Promise<V> {
  const recent = new Map<string, { readonly at: number; readonly promise: Promise<V> }>();
  return (key) => {
    const now = performance.now();
    const kept = recent.get(key);
    if (kept !== undefined && now - kept.at < ms) return kept.promise;
    // (the keys are a few queue names: the stale ones go as the next call meets them)
    for (const [k, v] of recent) if (now - v.at >= ms) recent.delete(k);
    const promise = call(key);
    const entry = { at: now, promise };
    recent.set(key, entry);
    promise.catch(() => {
      if (recent.get(key) === entry) recent.delete(key);
    });
    return promise;
  };
}
