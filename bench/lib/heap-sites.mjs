import { Session } from "node:inspector/promises";

// Bytes by allocating function in a sampled heap profile (HeapProfiler.stopSampling), for the
// allocation diagnostics (alloc-profile.mjs, drain.mjs --alloc).

/** Total sampled bytes and [site, bytes] pairs, largest first. */
export function allocationsBySite(profile) {
  const bySite = new Map();
  let total = 0;
  const walk = (node) => {
    const f = node.callFrame;
    const site = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${f.lineNumber + 1}`;
    total += node.selfSize;
    bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    for (const child of node.children) walk(child);
  };
  walk(profile.head);
  return { total, sites: [...bySite].sort((a, b) => b[1] - a[1]) };
}

/** Prints the `top` largest sites in bytes per job. */
export function printSites(sites, n, top) {
  for (const [site, bytes] of sites.slice(0, top)) {
    console.log(`${String(Math.round(bytes / n)).padStart(7)} B/job  ${site}`);
  }
}

/** Starts V8's sampling heap profiler in this process (collected objects included). */
export async function startHeapSampling() {
  const session = new Session();
  session.connect();
  await session.post("HeapProfiler.enable");
  await session.post("HeapProfiler.startSampling", {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return session;
}

/** Stops the sampling started by {@link startHeapSampling}; the profile's bytes by site. */
export async function stopHeapSampling(session) {
  const { profile } = await session.post("HeapProfiler.stopSampling");
  session.disconnect();
  return allocationsBySite(profile);
}
