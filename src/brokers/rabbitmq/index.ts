/**
 * The RabbitMQ broker: public surface of `chicory/rabbitmq`.
 * @module
 */
export { RabbitMqBroker } from "./rabbitmq-broker.js";
export { DEFAULT_DELAY_LEVELS_MS } from "./rabbitmq-delays.js";
export type { RabbitMqBrokerOptions, RabbitMqQueueType, RabbitMqSettings } from "./rabbitmq-options.js";
