/**
 * `chicory/rabbitmq`: the RabbitMQ broker. Needs the optional peer dependency
 * `amqplib@2`, imported lazily on `connect()`.
 * @module
 */
export {
  DEFAULT_DELAY_LEVELS_MS,
  RabbitMqBroker,
  type RabbitMqBrokerOptions,
  type RabbitMqQueueType,
  type RabbitMqSettings,
} from "./brokers/rabbitmq/index.js";
