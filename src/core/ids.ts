import { randomBytes, randomUUID } from "node:crypto";
import { hostname } from "node:os";

/** A new task id (UUID v4). */
export function newTaskId(): string {
  return randomUUID();
}

/** A worker id: `${hostname}-${pid}-${8 random hex}`. */
export function newWorkerId(host: string = hostname(), pid: number = process.pid): string {
  return `${host}-${pid}-${randomBytes(4).toString("hex")}`;
}
