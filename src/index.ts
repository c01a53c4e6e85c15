/**
 * Chicory: an async-native, typed, distributed task queue for Node.js.
 * @module
 */
export { Chicory, type ChicoryOptions, type WorkerHook } from "./app.js";
export {
  type Backend,
  isTerminalState,
  type ResultSizeLimit,
  type StoredError,
  TASK_STATES,
  type TaskRecord,
  type TaskState,
  type WaitOptions,
  type WorkerStats,
} from "./backends/backend.js";
export { MemoryBackend, type MemoryBackendOptions } from "./backends/memory.js";
export type {
  AckOptions,
  Broker,
  BrokerAdmin,
  BrokerBinding,
  BrokerCapabilities,
  Consumer,
  ConsumerOptions,
  Delivery,
  DlqMessage,
  DlqReplayGuard,
  HealthStatus,
  LeaseState,
  OutgoingMessage,
  PublishResult,
  ReleaseOptions,
} from "./brokers/broker.js";
export { MemoryBroker, type MemoryBrokerOptions } from "./brokers/memory.js";
export type { MemoryAdmin } from "./brokers/memory-admin.js";
export {
  type ChicoryConfig,
  type ChicoryConfigInput,
  DELIVERY_MODES,
  type DeliveryMode,
  resolveConfig,
  VALIDATION_MODES,
  type ValidationMode,
  type WorkerConfig,
  type WorkerOptions,
} from "./config.js";
export { type RetryOptions, TaskContext } from "./context.js";
export { type Duration, toMs, toSeconds } from "./core/duration.js";
export type { EnvMap } from "./core/env.js";
export type { JsonArg, JsonArgs, JsonValue, NotJson } from "./core/json.js";
export { type LogFn, type Logger, type LogLevel, type LogLevelName, silentLogger } from "./core/logger.js";
export {
  type DecodeFailure,
  type DecodeResult,
  MessageCodec,
  type MessageCodecOptions,
  type TaskMessage,
} from "./core/message.js";
export { type BackendType, type BrokerType, createBackend, createBroker, type DriverContext } from "./drivers.js";
export {
  BackendConnectionError,
  type BackendConnectionErrorOptions,
  BackendNotConfiguredError,
  BrokerConnectionError,
  type BrokerConnectionErrorOptions,
  ChicoryError,
  type ChicoryErrorOptions,
  ConfigurationError,
  DbPoolExhaustedError,
  DeadLetterQueueFullError,
  DriverNotInstalledError,
  MaxRetriesExceededError,
  MessageTooLargeError,
  type MessageTooLargeErrorOptions,
  QueueFullError,
  ReplayRecordKeptError,
  RetryError,
  TaskAbortedError,
  TaskFailedError,
  TaskIdConflictError,
  TaskNotFoundError,
  TaskTimeoutError,
  TimeoutError,
  ValidationError,
  type ValidationIssue,
} from "./errors.js";
export { type CreateLoggerOptions, createLogger } from "./logging.js";
export { AsyncResult, type GetOptions, type ResultDefaults, type StoredResult } from "./result.js";
export { type BackoffStrategy, RetryPolicy, type RetryPolicyOptions } from "./retry.js";
export { type ApplyOptions, Task, type TaskOptions } from "./task.js";
export { type RunOptions, Worker, type WorkerHealth, type WorkerInit } from "./worker/worker.js";
