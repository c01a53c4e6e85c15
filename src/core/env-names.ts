/**
 * Every `CHICORY_*` environment variable Chicory reads, to tell a misspelled one from one of a
 * broker or backend the process does not use (see `unknownEnvNames` in env.ts). A unit test
 * builds every kind of broker and backend and checks that each name their readers ask for is
 * listed here.
 * @module
 */

const family = (prefix: string, names: readonly string[]): string[] => names.map((name) => `${prefix}${name}`);

const REDIS_LOCATION = [
  "URL",
  "HOST",
  "PORT",
  "DB",
  "USERNAME",
  "PASSWORD",
  "TLS_CA",
  "TLS_REJECT_UNAUTHORIZED",
  "SENTINEL_USERNAME",
  "SENTINEL_PASSWORD",
];
const SQL = [
  "URL",
  "HOST",
  "PORT",
  "USERNAME",
  "PASSWORD",
  "DATABASE",
  "FILE_PATH",
  "SCHEMA",
  "TABLE_PREFIX",
  "RESULT_TTL",
  "POOL_SIZE",
  "MAX_OVERFLOW",
  "POOL_TIMEOUT",
  "POOL_RECYCLE",
  "QUERY_TIMEOUT",
];

/** The names (see module doc). */
export const KNOWN_ENV_NAMES: ReadonlySet<string> = new Set([
  ...family("CHICORY_", [
    "BROKER_URL",
    "BACKEND_URL",
    "VALIDATION_MODE",
    "DELIVERY_MODE",
    "RESULT_POLL_INTERVAL",
    "RESULT_DEFAULT_TIMEOUT",
    "SIGNING_KEY",
    "MAX_MESSAGE_BYTES",
    "MAX_RESULT_BYTES",
    "LOG_FORMAT",
    "CLI_SUPERVISED",
  ]),
  ...family("CHICORY_WORKER_", [
    "CONCURRENCY",
    "QUEUE",
    "USE_DEAD_LETTER_QUEUE",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TTL",
    "CLEANUP_INTERVAL",
    "STALE_WORKERS_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "LOG_LEVEL",
    "MAX_DELIVERIES",
    "INDEX",
  ]),
  ...family("CHICORY_BROKER_REDIS_", [
    ...REDIS_LOCATION,
    "CONSUMER_GROUP",
    "BLOCK_MS",
    "CLAIM_MIN_IDLE_MS",
    "MAX_STREAM_LENGTH",
    "DLQ_MAX_LENGTH",
    "KEY_PREFIX",
    "PREFETCH",
    "PUBLISH_TIMEOUT_MS",
    "WAIT_REPLICAS",
    "WAIT_TIMEOUT_MS",
  ]),
  ...family("CHICORY_BACKEND_REDIS_", [...REDIS_LOCATION, "KEY_PREFIX", "RESULT_TTL"]),
  ...family("CHICORY_BROKER_RABBITMQ_", [
    "URL",
    "HOST",
    "PORT",
    "USERNAME",
    "PASSWORD",
    "VHOST",
    "TLS_CA",
    "TLS_REJECT_UNAUTHORIZED",
    "PREFIX",
    "QUEUE_TYPE",
    "DURABLE",
    "MAX_PRIORITY",
    "DELIVERY_LIMIT",
    "MESSAGE_TTL",
    "RECONNECT_DELAY",
    "MAX_RECONNECT_DELAY",
    "PREFETCH_COUNT",
    "QUEUE_MAX_LENGTH",
    "PUBLISH_TIMEOUT",
  ]),
  ...family("CHICORY_BROKER_SQLITE_", [
    "PATH",
    "BUSY_TIMEOUT_MS",
    "CLAIM_MIN_IDLE_MS",
    "POLL_MIN_MS",
    "POLL_MAX_MS",
    "SYNCHRONOUS",
  ]),
  ...["POSTGRES", "MYSQL", "MSSQL", "SQLITE"].flatMap((db) => family(`CHICORY_BACKEND_${db}_`, SQL)),
]);

/**
 * Prefixes of the variables of this project's own test suites and benchmarks (README,
 * "Testing"; bench/README.md), which their worker processes inherit.
 */
export const KNOWN_ENV_PREFIXES: readonly string[] = [
  "CHICORY_RELIABILITY_",
  "CHICORY_TEST_",
  "CHICORY_BENCH_",
  "CHICORY_DIST",
];
