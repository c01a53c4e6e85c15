/**
 * The little of `amqplib` the RabbitMQ adapter uses, as local structural types, and its
 * lazy loader. Nothing outside `src/brokers/rabbitmq` sees these types.
 * @module
 */
import { DriverNotInstalledError } from "../../errors.js";

/** AMQP header table. */
export type AmqpHeaders = Record<string, unknown>;

/** A message as delivered by `basic.deliver` or `basic.get`. */
export interface AmqpMessage {
  readonly content: Buffer;
  readonly fields: {
    readonly deliveryTag: number;
    readonly redelivered: boolean;
    readonly routingKey: string;
    readonly exchange: string;
  };
  readonly properties: {
    readonly headers?: AmqpHeaders | undefined;
    readonly messageId?: string | undefined;
    readonly correlationId?: string | undefined;
    readonly priority?: number | undefined;
  };
}

/** Properties of a published message. */
export interface AmqpPublishOptions {
  persistent?: boolean;
  priority?: number;
  messageId?: string;
  correlationId?: string;
  contentType?: string;
  timestamp?: number;
  headers?: AmqpHeaders;
  mandatory?: boolean;
}

/** Reply of `queue.declare` (active or passive). */
export interface AmqpQueueReply {
  readonly queue: string;
  readonly messageCount: number;
  readonly consumerCount: number;
}

/** An AMQP channel. */
export interface AmqpChannel {
  on(event: "close", listener: () => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "return", listener: (message: AmqpMessage) => void): unknown;
  close(): Promise<void>;
  assertQueue(
    queue: string,
    options: { durable: boolean; arguments?: Record<string, unknown> },
  ): Promise<AmqpQueueReply>;
  checkQueue(queue: string): Promise<AmqpQueueReply>;
  deleteQueue(queue: string): Promise<{ messageCount: number }>;
  purgeQueue(queue: string): Promise<{ messageCount: number }>;
  checkExchange(exchange: string): Promise<unknown>;
  consume(
    queue: string,
    onMessage: (message: AmqpMessage | null) => void,
    options: { noAck: boolean; consumerTag?: string },
  ): Promise<{ consumerTag: string }>;
  cancel(consumerTag: string): Promise<unknown>;
  get(queue: string, options: { noAck: boolean }): Promise<AmqpMessage | false>;
  ack(message: AmqpMessage): void;
  nack(message: AmqpMessage, allUpTo?: boolean, requeue?: boolean): void;
  prefetch(count: number): Promise<unknown>;
}

/** A channel in confirm mode: `sendToQueue` calls back once the broker confirmed. */
export interface AmqpConfirmChannel extends AmqpChannel {
  sendToQueue(queue: string, content: Buffer, options: AmqpPublishOptions, callback: (error: unknown) => void): boolean;
}

/** An AMQP connection (amqplib's `ChannelModel`). */
export interface AmqpConnection {
  on(event: "close", listener: (error?: Error) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "blocked", listener: (reason: string) => void): unknown;
  on(event: "unblocked", listener: () => void): unknown;
  close(): Promise<void>;
  createChannel(): Promise<AmqpChannel>;
  createConfirmChannel(): Promise<AmqpConfirmChannel>;
}

/** The `amqplib` module. */
export interface AmqpModule {
  connect(url: string, socketOptions?: Record<string, unknown>): Promise<AmqpConnection>;
}

let loaded: Promise<AmqpModule> | undefined;

/**
 * Imports `amqplib` once.
 * @throws DriverNotInstalledError when the package is missing
 */
export function loadAmqplib(): Promise<AmqpModule> {
  loaded ??= import("amqplib").then(
    (mod) => ((mod as { default?: unknown }).default ?? mod) as unknown as AmqpModule,
    (error: unknown) => {
      loaded = undefined;
      throw new DriverNotInstalledError("amqplib@2", "the RabbitMQ broker", { cause: error });
    },
  );
  return loaded;
}

/** The AMQP reply code of a channel/connection error (`406` PRECONDITION_FAILED...), if any. */
export function amqpCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}
