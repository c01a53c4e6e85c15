/**
 * Load tests (RELIABILITY §3.7 L1), the RabbitMQ side: queue, consumer and channel figures read
 * with `rabbitmqctl` (AMQP itself does not expose unacknowledged counts), a sampler of worker RSS
 * and those figures, the backlog producer, and the removal of the test's queues.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { setTimeout as sleepMs } from "node:timers/promises";
import { Chicory } from "../../../src/index.js";
import { rssMiB } from "./load-workers.js";

/** Runs `rabbitmqctl <args> --formatter=json` and parses its JSON array. */
export function rabbitmqctl(args: readonly string[], timeoutMs = 30_000): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    execFile(
      "rabbitmqctl",
      [...args, "--formatter=json", "-q"],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`rabbitmqctl ${args.join(" ")}: ${error.message} ${stderr}`));
          return;
        }
        try {
          resolve(JSON.parse(stdout.trim() || "[]") as Array<Record<string, unknown>>);
        } catch (parseError) {
          reject(new Error(`rabbitmqctl ${args.join(" ")}: not JSON: ${stdout.slice(0, 300)} (${String(parseError)})`));
        }
      },
    );
  });
}

/** Counts of one queue as `rabbitmqctl list_queues` reports them. */
export interface QueueStats {
  readonly name: string;
  readonly messages: number;
  readonly ready: number;
  readonly unacked: number;
  readonly consumers: number;
  /** Bytes of the queue process (Erlang memory), message bodies on disk not included. */
  readonly memory: number;
}

/** Every queue whose name starts with `prefix.` (the broker's queues under that prefix). */
export async function queuesUnder(prefix: string): Promise<QueueStats[]> {
  const rows = await rabbitmqctl([
    "list_queues",
    "name",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
    "memory",
  ]);
  return rows
    .filter((row) => String(row.name).startsWith(`${prefix}.`))
    .map((row) => ({
      name: String(row.name),
      messages: Number(row.messages),
      ready: Number(row.messages_ready),
      unacked: Number(row.messages_unacknowledged),
      consumers: Number(row.consumers),
      memory: Number(row.memory),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Exchanges whose name contains `prefix` (the broker declares none; any would be a leftover). */
export async function exchangesWith(prefix: string): Promise<string[]> {
  const rows = await rabbitmqctl(["list_exchanges", "name"]);
  return rows.map((row) => String(row.name)).filter((name) => name.includes(prefix));
}

/**
 * Local ports of the TCP connections process `pid` has open to `remotePort` (its sockets from
 * `/proc/<pid>/fd`, matched by inode in `/proc/<pid>/net/tcp` and `tcp6`). Empty once it exited.
 */
export function localPortsTo(pid: number, remotePort: number): number[] {
  try {
    const inodes = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m?.[1]) inodes.add(m[1]);
      } catch {
        // fd closed meanwhile
      }
    }
    const ports: number[] = [];
    for (const table of ["tcp", "tcp6"]) {
      for (const line of readFileSync(`/proc/${pid}/net/${table}`, "utf8").split("\n").slice(1)) {
        const cols = line.trim().split(/\s+/);
        const [local, remote, inode] = [cols[1], cols[2], cols[9]];
        if (!local || !remote || !inode || !inodes.has(inode)) continue;
        if (Number.parseInt(remote.split(":")[1] ?? "", 16) !== remotePort) continue;
        ports.push(Number.parseInt(local.split(":")[1] ?? "", 16));
      }
    }
    return ports;
  } catch {
    return [];
  }
}

/**
 * The client port of a channel from its name as RabbitMQ gives it
 * (`127.0.0.1:40992 -> 127.0.0.1:5672 (1)`, `[::1]:40992 -> [::1]:5672 (1)`); null if not in that form.
 */
export function channelClientPort(name: string): number | null {
  const m = /:(\d+) -> \S+ \(\d+\)$/.exec(name);
  return m?.[1] ? Number(m[1]) : null;
}

/** One sample of a RabbitMQ drain. */
export interface RabbitSample {
  /** ms since the sampler started. */
  readonly t: number;
  /** RSS per worker (MiB), in worker order; null once exited. */
  readonly rss: Array<number | null>;
  /** The work queue's ready messages, read just after the channels. */
  readonly ready: number;
  /** Its unacknowledged messages: the sum over the workers. */
  readonly unacked: number;
  /** Unacknowledged messages on each worker's channels, in worker order (null: no channel found). */
  readonly unackedPerWorker: Array<number | null>;
  /** Prefetch (basic.qos) of each worker's consuming channel, in worker order (null: not found yet). */
  readonly prefetchPerWorker: Array<number | null>;
}

/**
 * Samples worker RSS, the work queue's ready count (AMQP `queue.declare` passive, cheap) and the
 * unacknowledged count and prefetch of each worker's channels (`rabbitmqctl list_channels`, the
 * only source of unacknowledged counts without the management plugin: ~0.5-2 s and most of a
 * core per call, so one call per cycle, back to back). Channels are attributed to workers by the
 * client port in their name, matched against each worker's TCP connections read from `/proc`
 * (no second `rabbitmqctl` call, and not `list_consumers`: a consumer between two subscriptions
 * has none). The queue's unacknowledged count is the sum over the workers (they are its only
 * consumers). `pids` may grow after `start()`; `ready()` resolves once a first cycle is done.
 */
export class RabbitSampler {
  readonly samples: RabbitSample[] = [];
  readonly #url: string;
  readonly #queue: string;
  readonly #pids: number[];
  readonly #amqpPort: number;
  #stopped = false;
  #loop: Promise<void> | null = null;
  #t0 = 0;
  #firstCycle: Promise<void> | null = null;
  /** Errors of failed cycles (a sample is skipped, never invented). */
  readonly errors: string[] = [];
  /** Duration of each `rabbitmqctl list_channels` call (ms). */
  readonly callMs: number[] = [];

  constructor(url: string, queue: string, pids: number[]) {
    this.#url = url;
    this.#queue = queue;
    this.#pids = pids;
    this.#amqpPort = Number(new URL(url).port || 5672);
  }

  start(): void {
    this.#t0 = Date.now();
    let firstCycleDone: () => void = () => undefined;
    this.#firstCycle = new Promise((resolve) => {
      firstCycleDone = resolve;
    });
    this.#loop = (async () => {
      const amqp = await import("amqplib");
      const connection = await amqp.connect(this.#url);
      let channel = await connection.createChannel();
      try {
        while (!this.#stopped) {
          const at = Date.now();
          try {
            const portToWorker = new Map<number, number>();
            this.#pids.forEach((pid, i) => {
              for (const port of localPortsTo(pid, this.#amqpPort)) portToWorker.set(port, i);
            });
            const rss = this.#pids.map(rssMiB);
            const callStart = Date.now();
            const channels = await rabbitmqctl(["list_channels", "name", "messages_unacknowledged", "prefetch_count"]);
            this.callMs.push(Date.now() - callStart);
            // the ready count right after the channels were read (list_channels takes seconds)
            const queue = await channel.checkQueue(this.#queue);
            const unackedPerWorker: Array<number | null> = this.#pids.map(() => null);
            const prefetchPerWorker: Array<number | null> = this.#pids.map(() => null);
            // every channel of a worker's connections: its consuming channel, and publish/admin
            // channels (never any unacknowledged message, prefetch 0)
            for (const row of channels) {
              const port = channelClientPort(String(row.name));
              const worker = port === null ? undefined : portToWorker.get(port);
              if (worker === undefined) continue;
              unackedPerWorker[worker] = (unackedPerWorker[worker] ?? 0) + Number(row.messages_unacknowledged);
              const prefetch = Number(row.prefetch_count);
              if (prefetch > 0) prefetchPerWorker[worker] = Math.max(prefetchPerWorker[worker] ?? 0, prefetch);
            }
            this.samples.push({
              t: at - this.#t0,
              rss,
              ready: queue.messageCount,
              unacked: unackedPerWorker.reduce<number>((sum, n) => sum + (n ?? 0), 0),
              unackedPerWorker,
              prefetchPerWorker,
            });
          } catch (error) {
            if (this.errors.length < 10) this.errors.push(String(error));
            // a failed checkQueue closes the channel
            channel = await connection.createChannel().catch(() => channel);
            await sleepMs(250);
          } finally {
            firstCycleDone();
          }
        }
      } finally {
        firstCycleDone();
        await connection.close().catch(() => undefined);
      }
    })();
    // a loop that failed to connect ends the wait too (stop() then reports its error)
    this.#loop.then(firstCycleDone, firstCycleDone);
  }

  /** Resolves once the first cycle ended (sampled or failed), so later cycles are warm. */
  async ready(): Promise<void> {
    await this.#firstCycle;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }

  /** Peak RSS of worker `i` (MiB). */
  peakRss(i: number): number {
    return Math.max(0, ...this.samples.map((s) => s.rss[i] ?? 0));
  }

  /** Peak unacknowledged messages of the queue. */
  get peakUnacked(): number {
    return Math.max(0, ...this.samples.map((s) => s.unacked));
  }

  /** Peak unacknowledged messages of one worker's consuming channel. */
  get peakUnackedPerWorker(): number {
    return Math.max(0, ...this.samples.flatMap((s) => s.unackedPerWorker.map((n) => n ?? 0)));
  }
}

/**
 * Enqueues `count` `tick(i)` jobs on the RabbitMQ broker at `url` under queue prefix `prefix`,
 * in windows of `window` concurrent sends (each confirmed by RabbitMQ). Resolves with the
 * elapsed ms.
 */
export async function enqueueTicksRabbit(url: string, prefix: string, count: number, window = 2000): Promise<number> {
  const producer = new Chicory({
    broker: url,
    backend: null,
    config: { env: { CHICORY_BROKER_RABBITMQ_PREFIX: prefix } },
  });
  const tick = producer.task({ name: "tick", ignoreResult: true }, async (_i: number) => null);
  const start = Date.now();
  try {
    for (let sent = 0; sent < count; sent += window) {
      const n = Math.min(window, count - sent);
      await Promise.all(Array.from({ length: n }, (_, k) => tick.send(sent + k)));
    }
    return Date.now() - start;
  } finally {
    await producer.disconnect();
  }
}

/** Deletes the queues `names` (missing ones are fine); the test's cleanup. */
export async function deleteQueues(url: string, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const amqp = await import("amqplib");
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createChannel();
    for (const name of names) await channel.deleteQueue(name);
    await channel.close();
  } finally {
    await connection.close();
  }
}
